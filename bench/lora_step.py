"""The same LoRA training step in a plain loop, ``tuners`` against ``peft``: the core must not be slower.

    .venv/bin/python bench/lora_step.py                          # 3 rounds of 8 timed steps each
    .venv/bin/python bench/lora_step.py --steps 1 --rounds 1 --warmup 1   # smoke test

Model: a Llama built from a config (hidden 512, 8 layers, 8 heads, MLP 1408, 32k vocabulary,
untied head: 58.5M parameters, seed 0, fp32 weights); LoRA r 16 (alpha 32, no dropout) on all
linear layers but the head (``target_modules="all-linear"`` in both); a fixed batch of 4 × 256
random tokens; the model's own causal-LM loss under bf16 autocast on the CPU (``--fp32`` turns it
off); AdamW over the adapter at lr 1e-4. Both start from identical base weights and LoRA B = 0, so
their first losses agree (printed: a check that they run the same step).

Nothing but the adapter differs, so the ratio is the LoRA layers' cost (forward, backward,
optimizer) against peft's. The two loops alternate in one process, ``--steps`` timed steps each per
round after ``--warmup`` untimed ones, so a change in the machine's load hits both alike. Prints
steps/s of each (the median over rounds) and tuners / peft; writes ``bench/results/lora_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "lora_step.json"
LLAMA = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
         "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 512, "tie_word_embeddings": False}
LORA_RANK, LORA_ALPHA = 16, 32
BATCH, LENGTH = 4, 256
LEARNING_RATE = 1e-4
SIDES = ("tuners", "peft")


def base_model():
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**LLAMA), dtype=torch.float32)


def adapted(side: str):
    """The base with LoRA from one library; the other library's parts are never imported for it."""
    if side == "tuners":
        import tuners

        return tuners.apply(base_model(), tuners.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules="all-linear"))
    import peft

    config = peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(base_model(), config)


class Loop:
    """One side's model, optimizer and batch; :meth:`step` is the plain training step."""

    def __init__(self, side: str, batch, bf16: bool) -> None:
        import torch

        self.side, self.batch, self.bf16 = side, batch, bf16
        self.model = adapted(side)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE)

    def step(self) -> float:
        import torch

        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(input_ids=self.batch, labels=self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def timed(self, steps: int) -> float:
        """Steps per second over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (at least 1)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    args = parser.parse_args()

    import peft
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    bf16 = not args.fp32
    batch = torch.randint(0, LLAMA["vocab_size"], (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    loops = {side: Loop(side, batch, bf16) for side in SIDES}
    with torch.device("meta"):  # counted without allocating a third model
        params = sum(p.numel() for p in base_model().parameters())
    first_loss = {side: loop.step() for side, loop in loops.items()}
    for loop in loops.values():
        for _ in range(args.warmup - 1):
            loop.step()
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_ in range(1, args.rounds + 1):
        for side in (SIDES if round_ % 2 else SIDES[::-1]):
            rates[side].append(loops[side].timed(args.steps))
        print(f"round {round_}: " + ", ".join(f"{s} {rates[s][-1]:.3f} steps/s" for s in SIDES), flush=True)

    median = {side: statistics.median(values) for side, values in rates.items()}
    ratio = median["tuners"] / median["peft"]
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"\nLlama {params / 1e6:.1f}M, LoRA r{LORA_RANK} all-linear, batch {BATCH} × {LENGTH}, {precision}, "
          f"{args.threads} threads")
    print(f"{'side':<8} {'trainable':>10} {'first loss':>10} {'steps/s':>8} {'tokens/s':>9}")
    for side in SIDES:
        print(f"{side:<8} {loops[side].trainable:>10,} {first_loss[side]:>10.4f} {median[side]:>8.3f} "
              f"{median[side] * BATCH * LENGTH:>9.0f}")
    print(f"\ntuners / peft steps/s: {ratio:.3f}x (goal: at least 1.0)")

    figures = {
        "model": {"config": LLAMA, "parameters": params}, "lora": {"r": LORA_RANK, "alpha": LORA_ALPHA,
                                                                  "target_modules": "all-linear"},
        "batch": [BATCH, LENGTH], "precision": precision, "threads": args.threads, "steps_per_round": args.steps,
        "rounds": args.rounds, "warmup": args.warmup,
        "trainable": {side: loops[side].trainable for side in SIDES}, "first_loss": first_loss,
        "steps_per_second": rates, "median_steps_per_second": median, "tuners_over_peft": round(ratio, 3),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""The studio's engine against transformers' Trainer + peft on the same fine-tuning job, on the CPU.

    .venv/bin/python bench/speed.py                        # 16 steps, batch 8, 2 alternating rounds
    .venv/bin/python bench/speed.py --steps 2 --repeats 1  # smoke test

The job: the bundled SmolLM2-135M-Instruct (converted once into the models folder), the first
``steps × batch`` distinct conversations of the bundled chatterbot demo as chat data, loss on the
assistant turns only, max_length 256, LoRA r 16 (alpha 32, no dropout) on all linear layers,
AdamW at lr 2e-4 with a linear schedule and no warm-up, one optimizer step per batch. Every
conversation is seen exactly once (one epoch, no validation split), so both sides train on the
same tokens whatever order their samplers draw them in.

- **studio**: the real engine, ``worker.engine.train`` on a RunSpec built here, with the spec's
  defaults for everything the job does not fix (``training.bf16: auto``, ``training.device: cpu``).
- **peer fp32 / peer bf16**: ``transformers.Trainer`` + ``peft`` as a user writes it: the same
  conversations tokenised with the tokenizer's chat template, labels -100 outside the assistant
  turns, ``DataCollatorForSeq2Seq`` padding, ``target_modules="all-linear"``, ``use_cpu=True``, once
  in fp32 and once with ``bf16=True``; the faster of the two is the peer's best on this machine.

Each measurement runs in its own subprocess, so its peak resident set (``ru_maxrss`` of that child,
read with ``os.wait4``; model loading included) is its own; the sides alternate for ``--repeats``
rounds so a change in the machine's load hits both. Torch uses as many threads as the machine
has cores.

Figures:

- **real tokens/s**: real tokens are the non-padding input tokens of the job (every token of every
  conversation, prompt and answer, as the model reads it; padding never counts), divided by the
  training loop's wall time: from the loop's start (the engine's ``progress(0)``, the Trainer's
  ``on_train_begin``) to the end of the last optimizer step. Loading, the final eval and saving
  are outside it; the first step (warm-up, compilation) is inside, as it is for a user.
- **step s**: the median optimizer step (the time between consecutive step ends).
- **peak RSS**: the child's peak resident set.
- **% bf16 peak**: achieved matmul GFLOP/s over the bf16 matmul peak measured at start
  (2048 × 2048 matmuls; the fp32 peak is measured and recorded too). The model's matmul FLOPs per
  real token are the usual estimate ``6 × (Σ in·out over every linear layer, lm_head included +
  Σ r·(in + out) over the LoRA pairs)``: 2 for the forward pass and 4 for the backward pass per
  weight. Attention's score and value products are left out (a few % at these lengths). A frozen
  base needs no weight gradients, so the work the job truly needs is ``4 × base + 6 × LoRA``;
  it is written to the JSON beside the usual estimate.

The table is printed, with the studio/peer ratio of real tokens/s (goal: at least 2.0 against the
peer's best precision); every figure goes to ``bench/results/speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "speed.json"
MODEL_NAME = "SmolLM2-135M-Instruct"
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.0
LEARNING_RATE = 2e-4
SEED = 0
IGNORE = -100  # label of a position that carries no loss (transformers' and the studio's convention)
SIDES = ("studio", "peer-fp32", "peer-bf16")
MATMUL_SIZE = 2048
GOAL_RATIO = 2.0


# ----------------------------------------------------------------------------- the job's data
def job_conversations(count: int) -> list[dict]:
    """The first ``count`` distinct conversations of the bundled chatterbot demo (as the studio writes it)."""
    from app.data.bundled import write_chatterbot

    with tempfile.TemporaryDirectory() as tmp:
        path = write_chatterbot(Path(tmp))
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    seen: set[str] = set()
    chosen = []
    for row in rows:
        key = json.dumps(row["messages"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            chosen.append({"messages": row["messages"]})
        if len(chosen) == count:
            return chosen
    raise SystemExit(f"the chatterbot demo has {len(chosen)} distinct conversations; steps × batch size "
                     f"({count}) must not exceed it")


def _token_ids(encoded: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns a BatchEncoding in transformers 5, a list before."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode_chat(tokenizer: Any, messages: list[dict], max_length: int) -> dict[str, list[int]]:
    """A conversation as a Trainer user encodes it: the chat template's tokens, labels only on the
    assistant turns (each turn's span lies between the prompt rendered up to it, with the generation
    prompt, and the conversation rendered through it), cut to ``max_length``."""
    ids = _token_ids(tokenizer.apply_chat_template(messages, tokenize=True))
    labels = [IGNORE] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_token_ids(tokenizer.apply_chat_template(messages[:i], tokenize=True, add_generation_prompt=True)))
        through = _token_ids(tokenizer.apply_chat_template(messages[: i + 1], tokenize=True))
        if ids[: len(through)] != through:
            raise RuntimeError("the chat template's prefixes do not line up with the whole conversation")
        labels[start : len(through)] = ids[start : len(through)]
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


# ----------------------------------------------------------------------------- machine and model figures
def matmul_peak(dtype_name: str, size: int = MATMUL_SIZE, trials: int = 3, trial_seconds: float = 0.5) -> float:
    """GFLOP/s of square ``size`` matmuls in ``dtype_name``: the best of a few timed trials."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    start = time.perf_counter()
    a @ b  # warm-up, and a first estimate of one product's time
    per_product = max(time.perf_counter() - start, 1e-4)
    reps = max(1, round(trial_seconds / per_product))
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * size**3 / best / 1e9


def matmul_params(model_dir: Path, rank: int) -> dict[str, int]:
    """Weights that take part in a matmul per token: every linear layer (lm_head included, counted
    once when tied to the embeddings) and the LoRA pairs peft's ``all-linear`` puts on all of them
    but the head. Built on the meta device: no weights are read."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linear = lora = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            linear += module.in_features * module.out_features
            if module is not head:
                lora += rank * (module.in_features + module.out_features)
    return {"linear": linear, "lora": lora}


# ----------------------------------------------------------------------------- one measurement (child)
def _step_seconds(loop_start: float, step_ends: list[float]) -> list[float]:
    marks = [loop_start, *step_ends]
    return [b - a for a, b in zip(marks, marks[1:])]


def run_studio(job: dict) -> dict:
    """The engine on the job; the loop is timed by the reporter's ``progress`` calls."""
    from app.core.spec import RunSpec
    from worker.engine import MemoryReporter, train

    class StepClock(MemoryReporter):
        """Notes when the loop starts (``progress(0)``) and when each step ends."""

        def __init__(self) -> None:
            super().__init__()
            self.loop_start: float | None = None
            self.step_ends: list[float] = []

        def progress(self, step: int, total_steps: int) -> None:
            super().progress(step, total_steps)
            now = time.perf_counter()
            if step == 0:
                self.loop_start, self.step_ends = now, []
            else:
                self.step_ends.append(now)

    spec = RunSpec.from_dict({
        "name": "bench-speed",
        "model": {"name": MODEL_NAME},
        "data": {"dataset": job["data"], "shape": "chat", "max_length": job["max_length"], "val_fraction": 0.0,
                 "dedupe": False},
        "method": {"peft_type": "LORA", "r": LORA_RANK, "lora_alpha": LORA_ALPHA, "lora_dropout": LORA_DROPOUT,
                   "target_modules": "all-linear"},
        "training": {"max_steps": job["steps"], "batch_size": job["batch_size"], "learning_rate": LEARNING_RATE,
                     "warmup_steps": 0, "scheduler": "linear", "eval_every": 0, "log_every": 1, "seed": SEED,
                     "bf16": "auto", "device": "cpu"},
    })
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        result = train(spec, Path(out) / "run", clock, Path(job["models_dir"]), resolver=lambda ref: Path(str(ref)))
    losses = [p.loss for p in clock.points if p.split == "train" and p.loss is not None]
    return {
        "steps": result.steps,
        "loop_seconds": clock.step_ends[-1] - clock.loop_start,
        "step_seconds": _step_seconds(clock.loop_start, clock.step_ends),
        "mean_train_loss": statistics.fmean(losses) if losses else None,
        "engine_tokens_per_second": [p.tokens_per_second for p in clock.points if p.split == "train"],
        # The lines that say what precision the engine chose (the method line names device and autocast).
        "precision_log": [line for line in clock.lines
                          if any(word in line for word in ("bf16", "precision", "trainable parameters"))],
    }


def run_peer(job: dict, bf16: bool) -> dict:
    """Trainer + peft on the job, timed by a callback; the collator counts the real tokens it batches."""
    import peft
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [json.loads(line) for line in Path(job["data"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    examples = [encode_chat(tokenizer, row["messages"], job["max_length"]) for row in rows]
    model = transformers.AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules="all-linear",
        task_type="CAUSAL_LM"))

    padding = transformers.DataCollatorForSeq2Seq(tokenizer, padding=True)
    counted = {"tokens": 0}

    def collate(features: list[dict]) -> dict:
        batch = padding(features)
        counted["tokens"] += int(batch["attention_mask"].sum())
        return batch

    class StepClock(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.loop_start = 0.0
            self.step_ends: list[float] = []
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.loop_start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, max_steps=job["steps"], per_device_train_batch_size=job["batch_size"],
            learning_rate=LEARNING_RATE, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
            use_cpu=True, bf16=bf16, seed=SEED, data_seed=SEED,
        )
        trainer = transformers.Trainer(model=model, args=args, train_dataset=examples, data_collator=collate,
                                       callbacks=[clock])
        trainer.train()
    return {
        "steps": len(clock.step_ends),
        "loop_seconds": clock.step_ends[-1] - clock.loop_start,
        "step_seconds": _step_seconds(clock.loop_start, clock.step_ends),
        "mean_train_loss": statistics.fmean(clock.losses) if clock.losses else None,
        "collated_tokens": counted["tokens"],
    }


def child_main(side: str, job_path: Path, out_path: Path) -> None:
    import torch

    job = json.loads(job_path.read_text())
    torch.set_num_threads(job["threads"])
    figures = run_studio(job) if side == "studio" else run_peer(job, bf16=side == "peer-bf16")
    out_path.write_text(json.dumps(figures))


# ----------------------------------------------------------------------------- the comparison (parent)
def measure(side: str, job_path: Path, workdir: Path, threads: int) -> dict:
    """One side in a fresh subprocess; its own peak RSS comes from ``wait4`` on it."""
    out_path, log_path = workdir / f"{side}.json", workdir / f"{side}.log"
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--child", side, "--job", str(job_path),
                                 "--out", str(out_path)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    figures: dict[str, Any] = {"side": side, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}
    if proc.returncode != 0 or not out_path.is_file():
        tail = log_path.read_text(errors="replace").splitlines()[-25:]
        figures["error"] = f"exit status {proc.returncode}"
        print(f"{side} failed ({figures['error']}):\n  " + "\n  ".join(tail), file=sys.stderr)
        return figures
    figures.update(json.loads(out_path.read_text()))
    return figures


def add_rates(run: dict, real_tokens: int, flops_per_token: dict[str, float], peaks: dict[str, float]) -> None:
    """Real tokens/s, the median step and the share of the matmul peaks, from a run's timings."""
    if "error" in run:
        return
    rate = real_tokens / run["loop_seconds"]
    run["real_tokens_per_second"] = round(rate, 1)
    run["median_step_seconds"] = round(statistics.median(run["step_seconds"]), 3)
    run["first_step_seconds"] = round(run["step_seconds"][0], 3)
    for name, per_token in flops_per_token.items():
        gflops = rate * per_token / 1e9
        run[f"{name}_gflops"] = round(gflops, 1)
        for dtype, peak in peaks.items():
            run[f"{name}_fraction_of_{dtype}_peak"] = round(gflops / peak, 3)


def side_summary(runs: list[dict]) -> dict[str, dict]:
    """Per side, the median over rounds of real tokens/s and of the other figures."""
    summary = {}
    for side in SIDES:
        done = [r for r in runs if r["side"] == side and "error" not in r]
        if done:
            summary[side] = {
                "runs": len(done),
                "real_tokens_per_second": round(statistics.median(r["real_tokens_per_second"] for r in done), 1),
                "median_step_seconds": round(statistics.median(r["median_step_seconds"] for r in done), 3),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in done),
                "fraction_of_bf16_peak": round(statistics.median(r["usual_fraction_of_bf16_peak"] for r in done), 3),
            }
    return summary


def print_table(runs: list[dict], summary: dict[str, dict], ratio: float | None, best_peer: str | None) -> None:
    header = f"{'round':>6}  {'side':<10} {'real tok/s':>10} {'step s':>8} {'1st step s':>10} {'peak RSS MiB':>12} " \
             f"{'% bf16 peak':>11}"
    print(header)
    print("-" * len(header))
    for run in runs:
        if "error" in run:
            print(f"{run['round']:>6}  {run['side']:<10} failed: {run['error']}")
            continue
        print(f"{run['round']:>6}  {run['side']:<10} {run['real_tokens_per_second']:>10.1f} "
              f"{run['median_step_seconds']:>8.3f} {run['first_step_seconds']:>10.3f} {run['peak_rss_mib']:>12.0f} "
              f"{100 * run['usual_fraction_of_bf16_peak']:>10.1f}%")
    print("-" * len(header))
    for side, s in summary.items():
        print(f"{'median':>6}  {side:<10} {s['real_tokens_per_second']:>10.1f} {s['median_step_seconds']:>8.3f} "
              f"{'':>10} {s['peak_rss_mib']:>12.0f} {100 * s['fraction_of_bf16_peak']:>10.1f}%")
    if ratio is not None:
        verdict = "meets" if ratio >= GOAL_RATIO else "below"
        print(f"\nstudio / {best_peer} (the peer's best) real tokens/s: {ratio:.2f}x ({verdict} the {GOAL_RATIO:.1f}x goal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of studio, peer fp32, peer bf16")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.job, args.out)
        return
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"--sides: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SIDES)}")

    import torch
    import transformers

    from app.core.devices import bf16_supported
    from app.core.models import ensure_smollm2
    from app.core.settings import Settings

    torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}
    print(f"matmul peak ({MATMUL_SIZE}², {args.threads} threads): fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s")
    settings = Settings.from_env()
    model_dir = ensure_smollm2(settings.models_dir)
    params = matmul_params(model_dir, LORA_RANK)
    flops_per_token = {"usual": 6.0 * (params["linear"] + params["lora"]),
                       "needed": 4.0 * params["linear"] + 6.0 * params["lora"]}
    conversations = job_conversations(args.steps * args.batch_size)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    real_tokens = sum(len(encode_chat(tokenizer, c["messages"], args.max_length)["input_ids"]) for c in conversations)
    print(f"job: {len(conversations)} conversations, {real_tokens:,} real tokens, {args.steps} steps of "
          f"{args.batch_size}; {flops_per_token['usual'] / 1e6:.0f} MFLOP per token (6 × (linear + LoRA))")

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        workdir = Path(tmp)
        data = workdir / "chatterbot-job.jsonl"
        data.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
        job = {"model_dir": str(model_dir), "models_dir": str(settings.models_dir), "data": str(data),
               "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
               "threads": args.threads}
        job_path = workdir / "job.json"
        job_path.write_text(json.dumps(job))
        for round_ in range(1, args.repeats + 1):
            for side in sides:
                print(f"round {round_}: {side} ...", flush=True)
                run = {"round": round_, **measure(side, job_path, workdir, args.threads)}
                add_rates(run, real_tokens, flops_per_token, peaks)
                runs.append(run)

    summary = side_summary(runs)
    peers = [s for s in ("peer-fp32", "peer-bf16") if s in summary]
    best_peer = max(peers, key=lambda s: summary[s]["real_tokens_per_second"]) if peers else None
    ratio = (summary["studio"]["real_tokens_per_second"] / summary[best_peer]["real_tokens_per_second"]
             if best_peer and "studio" in summary else None)
    print()
    print_table(runs, summary, ratio, best_peer)
    studio_notes = {line for r in runs if r["side"] == "studio" for line in r.get("precision_log", [])}
    for line in sorted(studio_notes):
        print(f"studio log: {line}")

    figures = {
        "job": {"model": MODEL_NAME, "data": "chatterbot demo, chat", "conversations": len(conversations),
                "real_tokens": real_tokens, "steps": args.steps, "batch_size": args.batch_size,
                "max_length": args.max_length, "method": f"LoRA r{LORA_RANK} alpha {LORA_ALPHA} all-linear",
                "learning_rate": LEARNING_RATE, "device": "cpu", "threads": args.threads, "repeats": args.repeats},
        "machine": {"matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
                    "cpu_bf16": bf16_supported(torch.device("cpu")), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "peft": _version("peft")},
        "flops_per_token": {**flops_per_token, "matmul_params": params,
                            "usual_formula": "6 * (sum in*out over linear layers incl. lm_head + sum r*(in+out) over LoRA)",
                            "needed_formula": "4 * (sum in*out over frozen linear layers) + 6 * (sum r*(in+out) over LoRA)"},
        "runs": runs, "summary": summary, "best_peer": best_peer,
        "studio_over_best_peer": round(ratio, 3) if ratio is not None else None, "goal_ratio": GOAL_RATIO,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    if any("error" in r for r in runs):
        sys.exit(1)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

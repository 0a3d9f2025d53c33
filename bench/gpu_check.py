"""The GPU path, checked in one go: bf16 training, the NF4/int8 CUDA paths, compile, and the figures.

    bench/gpu_check.sh                                   # on a CUDA machine: installs what it needs, runs this
    .venv/bin/python bench/gpu_check.py                  # the same, with the .venv as it is
    .venv/bin/python bench/gpu_check.py --device cpu --steps 2 --backend aot_eager   # smoke test on a CPU

Checks (each PASS or FAIL, and the script exits 1 if any fails):

1. **quant**: ``tuners.quant`` on the device equals the CPU reference (which tests/tuners/test_quant_nf4.py
   holds bit-exact with bitsandbytes' CPU build): NF4 (plain and double quantized) and int8 codes and
   scales quantized on the device equal the CPU's byte for byte; the device's dequantization (the compiled
   one on CUDA, ``nf4.dequantizer``) equals the CPU's eager one exactly; a ``QuantizedLinear``'s forward
   and input gradient on the device match the CPU's (fp32, TF32 off).
2. **compile**: the engine's LoRA job (bench/speed.py's: bundled SmolLM2-135M-Instruct, chatterbot as
   chat, LoRA r16 all-linear, batch 8, max_length 256) with ``training.compile`` false and true gives
   the same losses within bf16 rounding; the compiled run must really be compiled (its log says so).
3. **bf16**: that compiled LoRA run trained in bf16 (``training.bf16: auto``) and its loss fell.
4. **figures**: real tokens/s (mean of the steps after ``--warmup``) and peak memory
   (``torch.cuda.max_memory_allocated``; peak RSS on a CPU) for LoRA, QLoRA (NF4, double quantized)
   and full fine-tuning on the same job, each at the spec's defaults for the device (bf16 and compile
   auto), each in its own process so its peak is its own.

Everything goes to ``bench/results/gpu_check.json`` and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import LORA_ALPHA, LORA_RANK, MODEL_NAME, SEED, job_conversations  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu_check.json"
METHODS = {
    "lora": ({"peft_type": "LORA", "r": LORA_RANK, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0,
              "target_modules": "all-linear"}, {"precision": "full"}),
    "qlora": ({"peft_type": "LORA", "r": LORA_RANK, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0,
               "target_modules": "all-linear"}, {"precision": "nf4", "double_quant": True}),
    "full": ({"peft_type": "FULL"}, {"precision": "full"}),
}
# Compiled and eager losses agree within bf16 rounding (relative).
LOSS_RTOL = 2e-2
# The bf16 run's loss must fall: the mean of its last steps below this share of its first steps'.
LOSS_FALL = 0.9
QUANT_SHAPES = [(576, 576), (1536, 576), (576, 1536), (300, 257), (33, 17)]


# ----------------------------------------------------------------------------------------------- quant
def check_quant(device: str) -> dict[str, Any]:
    """Our NF4/int8 on ``device`` against our CPU reference; every comparison and its result."""
    import torch

    from tuners.quant import dequantize_int8, quantize_int8, quantize_nf4
    from tuners.quant.linear import QuantizedLinear
    from tuners.quant.nf4 import dequantize_absmax, dequantize_nf4_tensors, dequantizer, unpack_table

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(device)
    failures: list[str] = []
    compared = 0

    def same(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
        nonlocal compared
        compared += 1
        if got.shape != want.shape or not torch.equal(got.cpu(), want.cpu()):
            diff = (got.cpu().float() - want.cpu().float()).abs().max().item() if got.shape == want.shape else None
            failures.append(f"{name}: differs (max abs difference {diff})")

    def dequantized(stored: Any, on: torch.device) -> torch.Tensor:
        absmax = stored.absmax.to(on)
        if stored.double_quant:
            absmax = dequantize_absmax(absmax, stored.absmax_scale.to(on), stored.absmax_offset.to(on))
        packed = stored.packed.to(on)
        fn = dequantizer(on) if on.type != "cpu" else dequantize_nf4_tensors
        return fn(packed, absmax, unpack_table(packed), stored.shape, stored.blocksize, torch.float32)

    for shape in QUANT_SHAPES:
        g = torch.Generator().manual_seed(sum(shape))
        weight = torch.randn(shape, generator=g) * 0.02
        for dq in (False, True):
            ref = quantize_nf4(weight, double_quant=dq)
            ours = quantize_nf4(weight.to(dev), double_quant=dq)
            tag = f"nf4{'-dq' if dq else ''} {shape}"
            same(f"{tag} packed codes", ours.packed, ref.packed)
            same(f"{tag} absmax", ours.absmax, ref.absmax)
            if dq:
                same(f"{tag} absmax scale", ours.absmax_scale, ref.absmax_scale)
                same(f"{tag} absmax offset", ours.absmax_offset, ref.absmax_offset)
            same(f"{tag} dequantized on {device}", dequantized(ref, dev), dequantized(ref, torch.device("cpu")))
        q_ref, a_ref = quantize_int8(weight)
        q, a = quantize_int8(weight.to(dev))
        same(f"int8 {shape} codes", q, q_ref)
        same(f"int8 {shape} row scales", a, a_ref)
        same(f"int8 {shape} dequantized on {device}", dequantize_int8(q, a), dequantize_int8(q_ref, a_ref))

    for bits in (4, 8):
        g = torch.Generator().manual_seed(bits)
        weight = torch.randn(256, 576, generator=g) * 0.02
        x = torch.randn(4, 32, 576, generator=g)
        outputs = {}
        for where in ("cpu", device):
            layer = QuantizedLinear(weight.clone(), None, bits=bits).to(where)
            xi = x.clone().to(where).requires_grad_(True)
            y = layer(xi)
            y.square().sum().backward()
            outputs[where] = (y.detach().cpu(), xi.grad.cpu())
        compared += 1
        (y_cpu, g_cpu), (y_dev, g_dev) = outputs["cpu"], outputs[device]
        if not (torch.allclose(y_dev, y_cpu, rtol=1e-4, atol=1e-5) and torch.allclose(g_dev, g_cpu, rtol=1e-4, atol=1e-5)):
            failures.append(f"QuantizedLinear bits={bits}: forward or input gradient differs from the CPU "
                            f"(max {(y_dev - y_cpu).abs().max().item():.2e}, {(g_dev - g_cpu).abs().max().item():.2e})")
    return {"check": "quant", "passed": not failures, "compared": compared, "failures": failures}


# ----------------------------------------------------------------------------------------------- engine runs
def engine_run(job: dict[str, Any]) -> dict[str, Any]:
    """One engine run of the job (in this process); its losses, speed, peak memory and log."""
    import torch

    import worker.compilation as compilation
    from app.core.spec import RunSpec
    from worker.engine import MemoryReporter, TrainingRecipe

    compilation.BACKEND = job["backend"]
    method, model = METHODS[job["method"]]
    training = {"max_steps": job["steps"], "batch_size": job["batch_size"], "eval_every": 0, "seed": SEED,
                "device": job["device"], "log_every": 1, "compile": job["compile"]}
    spec = RunSpec.from_dict({
        "name": f"gpu-check-{job['method']}", "model": {"name": MODEL_NAME, **model},
        "data": {"dataset": job["data"], "shape": "chat", "max_length": job["max_length"], "val_fraction": 0.0,
                 "dedupe": False},
        "method": method, "training": training,
    })
    cuda = job["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reporter = MemoryReporter()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        recipe = TrainingRecipe(spec, Path(out), reporter, Path(job["models_dir"]), resolver=lambda ref: Path(str(ref)))
        recipe.setup()
        setup_s = time.perf_counter() - start
        recipe.train()
        if cuda:
            torch.cuda.synchronize()
    points = [p for p in reporter.points if p.split == "train"]
    timed = points[job["warmup"]:] or points
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "method": job["method"], "compile": job["compile"], "bf16": recipe.bf16, "setup_seconds": round(setup_s, 1),
        "losses": [p.loss for p in points],
        "tokens_per_second": round(statistics.fmean(p.tokens_per_second for p in timed), 1),
        "peak_memory_bytes": int(peak), "peak_memory_kind": "cuda max_memory_allocated" if cuda else "peak RSS",
        "compiled": any("blocks compiled" in line for line in reporter.lines),
        "log": [line for line in reporter.lines if any(w in line for w in ("speed:", "memory:", "method:"))],
    }


def in_child(job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``engine_run`` in a fresh process, so its peak memory and compiled graphs are its own."""
    job_path, out_path = workdir / f"job-{job['name']}.json", workdir / f"out-{job['name']}.json"
    job_path.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, __file__, "--child", str(job_path), "--out", str(out_path)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out_path.exists():
        return {"method": job["method"], "compile": job["compile"], "error": proc.stderr[-3000:]}
    return json.loads(out_path.read_text())


def falls(losses: list[float]) -> bool:
    k = max(1, len(losses) // 4)
    return statistics.fmean(losses[-k:]) < LOSS_FALL * statistics.fmean(losses[:k])


# ----------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of tokens/s (compiling, recompiles)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--conversations", type=int, default=48, help="distinct conversations (repeated by epochs)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: a quick CPU smoke)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.out.write_text(json.dumps(engine_run(json.loads(args.child.read_text()))))
        return

    import torch

    from app.core.models import ensure_smollm2
    from app.core.settings import Settings

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"no CUDA device (torch {torch.__version__}); bench/gpu_check.sh installs a CUDA build of torch")
    started = time.perf_counter()
    machine = {"device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    print(f"gpu_check on {machine['device']} (torch {machine['torch']}, CUDA {machine['cuda']})", flush=True)
    checks = [check_quant(args.device)]
    print(f"quant: {'PASS' if checks[0]['passed'] else 'FAIL'} ({checks[0]['compared']} comparisons)", flush=True)
    for failure in checks[0]["failures"]:
        print(f"  {failure}")

    settings = Settings.from_env()
    ensure_smollm2(settings.models_dir)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(tmp)
        data = workdir / "chatterbot-job.jsonl"
        conversations = job_conversations(args.conversations)
        data.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
        base = {"data": str(data), "models_dir": str(settings.models_dir), "device": args.device, "steps": args.steps,
                "batch_size": args.batch_size, "max_length": args.max_length, "warmup": args.warmup,
                "backend": args.backend}
        for name, method, compile_ in (("lora-eager", "lora", False), ("lora", "lora", True), ("qlora", "qlora", True),
                                       ("full", "full", True)):
            print(f"run {name} ...", flush=True)
            runs.append(in_child({**base, "name": name, "method": method, "compile": compile_}, workdir))
            if "error" in runs[-1]:
                print(f"  failed:\n{runs[-1]['error']}")

    by_name = dict(zip(("lora-eager", "lora", "qlora", "full"), runs, strict=True))
    eager, compiled = by_name["lora-eager"], by_name["lora"]
    if "error" in eager or "error" in compiled:
        checks.append({"check": "compile", "passed": False, "failures": ["a LoRA run failed"]})
        checks.append({"check": "bf16", "passed": False, "failures": ["the compiled LoRA run failed"]})
    else:
        gap = max(abs(a - b) / abs(b) for a, b in zip(compiled["losses"], eager["losses"], strict=True))
        compile_failures = [] if compiled["compiled"] else ["the compiled run's blocks ran eager: " + " / ".join(
            line for line in compiled["log"] if "speed:" in line)]
        if gap > LOSS_RTOL:
            compile_failures.append(f"losses differ by up to {gap:.2%} (allowed {LOSS_RTOL:.0%})")
        checks.append({"check": "compile", "passed": not compile_failures, "largest_relative_loss_gap": gap,
                       "failures": compile_failures})
        bf16_failures = []
        if args.device == "cuda" and not compiled["bf16"]:
            bf16_failures.append("the run did not train in bf16")
        if not falls(compiled["losses"]):
            bf16_failures.append(f"the loss did not fall: {compiled['losses'][:3]} ... {compiled['losses'][-3:]}")
        checks.append({"check": "bf16", "passed": not bf16_failures, "bf16": compiled["bf16"],
                       "first_loss": compiled["losses"][0], "last_loss": compiled["losses"][-1],
                       "failures": bf16_failures})
    for check in checks[1:]:
        print(f"{check['check']}: {'PASS' if check['passed'] else 'FAIL'}"
              + "".join(f"\n  {f}" for f in check["failures"]))

    print(f"\n{'run':<11} {'bf16':>5} {'compiled':>8} {'setup s':>8} {'tokens/s':>10} {'peak memory':>12}  loss first→last")
    for name, run in by_name.items():
        if "error" in run:
            print(f"{name:<11} failed")
            continue
        print(f"{name:<11} {str(run['bf16']):>5} {str(run['compiled']):>8} {run['setup_seconds']:>8.1f} "
              f"{run['tokens_per_second']:>10,.0f} {run['peak_memory_bytes'] / 2**20:>9,.0f} MiB  "
              f"{run['losses'][0]:.3f}→{run['losses'][-1]:.3f}")
    if "error" not in by_name["qlora"] and "error" not in by_name["lora"]:
        share = by_name["qlora"]["peak_memory_bytes"] / by_name["lora"]["peak_memory_bytes"]
        print(f"QLoRA peak memory is {share:.0%} of LoRA's")
    passed = all(c["passed"] for c in checks)
    elapsed = time.perf_counter() - started
    print(f"\n{'ALL PASS' if passed else 'FAILED'} in {elapsed:.0f} s")
    figures = {"machine": machine, "job": {"model": MODEL_NAME, **{k: v for k, v in vars(args).items()
                                                                    if k not in ("child", "out")}},
               "checks": checks, "runs": by_name, "passed": passed, "seconds": round(elapsed, 1),
               "environment": {k: v for k, v in os.environ.items() if k.startswith(("CUDA_", "TORCH"))}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

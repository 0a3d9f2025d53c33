"""Does the studio's memory estimate hold? Estimate vs measured peak memory of real training steps.

    .venv/bin/python bench/memory.py                  # every case below (24 fresh processes; SmolLM2 cases took
                                                      # 6-22 min each on 2 cores under load 16-30)
    .venv/bin/python bench/memory.py --compute bf16   # only the bf16 cases
    .venv/bin/python bench/memory.py --report         # re-print the saved measurements against the
                                                      # current estimate (no training)

Cases: the bundled SmolLM2-135M-Instruct (causal LM) and all-MiniLM-L6-v2 (classification), each
with LoRA (r=8 on the attention projections), QLoRA (the same LoRA on NF4 double-quantized base
weights) and full fine-tuning, at sequence lengths 128 and 256, batch 4, on CPU, each in bf16 (what
``bf16: auto`` resolves to on a CPU with AVX512-BF16 or AMX; the frozen base is then stored in bf16)
and in fp32. Every example is long enough to be cut to exactly the sequence length, so no batch is
shorter than the estimate assumes (packing then changes nothing: four full rows).

Each case runs the real engine (``worker.engine.train``: load, quantize, apply the method, AdamW,
a few steps) in a fresh subprocess, so one case's allocations cannot hide in another's numbers.

What "measured" means (CPU): the process's peak resident set (VmHWM) during the training steps
minus its resident set after importing the libraries (torch, transformers, the engine) and before
loading anything. The kernel's peak counter is reset (``/proc/self/clear_refs``) when the engine
reports step 0 (model, adapter and optimizer ready), and read when it reports the last step; the
child runs with a low ``MALLOC_MMAP_THRESHOLD_`` so freed tensors go back to the OS and the
resident set tracks live memory. So it holds the frozen weights, the trainable weights, their
gradients and AdamW moments, the activations autograd keeps, and the transient buffers of the
forward/backward pass: the same things the estimate adds up. The one-off peak of *loading* (a
quantized model is read in fp32 first) is reported separately as ``load_peak_mib``
(``ru_maxrss`` minus the same baseline); on a GPU worker that load happens on the host, not on the
card. On CUDA the measured figure would be ``torch.cuda.max_memory_allocated`` (not run here).

QLoRA on CPU: the checkpoint is memory-mapped and quantizing reads every fp32 weight; the engine
then copies what stays unquantized out of the mapping (``app.core.models.release_checkpoint``), so
the fp32 file pages are not resident during training. ``file_pages_at_ready_mib`` (file-backed
pages resident when training starts, beyond the baseline) shows it: ≈ 0 for quantized runs; an
unquantized fp32 run's weights *are* the mapped file pages. The printed "QLoRA/LoRA" line compares
the two recipes' measured peaks at each length and precision.

Results go to ``bench/results/memory.json`` and a table (estimate, measured, ratio) is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {"SmolLM2-135M-Instruct": ("CAUSAL_LM", ["q_proj", "v_proj"]),
          "all-MiniLM-L6-v2": ("SEQ_CLS", ["query", "value"])}
RECIPES = {"lora": ("LORA", "full"), "qlora": ("LORA", "nf4"), "full": ("FULL", "full")}
COMPUTE = ("bf16", "fp32")
SEQ_LENS = (128, 256)
BATCH = 4
STEPS = 3
TOLERANCE = 0.25
OUT = ROOT / "bench" / "results" / "memory.json"
PARTIAL = ROOT / "bench" / "results" / "memory.partial.jsonl"


# ----------------------------------------------------------------------------- child: one case
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _settle() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rows(task: str, seq_len: int, n: int = 24) -> list[dict]:
    """Unique rows of random words, each several times longer than ``seq_len`` tokens."""
    rng = random.Random(0)
    words = ["river", "stone", "light", "garden", "window", "paper", "silver", "morning", "engine", "letter",
             "orange", "winter", "castle", "forest", "bridge", "market", "pencil", "summer", "violet", "harbor"]
    rows = []
    for i in range(n):
        text = f"{i} " + " ".join(rng.choice(words) for _ in range(seq_len * 2))
        rows.append({"text": text, "label": ["low", "mid", "high"][i % 3]} if task == "SEQ_CLS" else {"text": text})
    return rows


def _force_bf16() -> bool:
    """On a CPU without AVX512-BF16 or AMX the engine refuses ``bf16: true``, though bf16 storage and
    autocast take the same memory there (only slower, emulated). To measure the bf16 cases anyway the
    child lets the engine train in bf16; returns whether it had to (recorded as ``bf16_emulated``)."""
    import torch

    import app.core.devices
    import worker.precision

    if app.core.devices.bf16_supported(torch.device("cpu")):
        return False
    app.core.devices.bf16_supported = worker.precision.bf16_supported = lambda device, flags=None: True
    return True


def run_case(model: str, recipe: str, seq_len: int, compute: str, batch: int, steps: int) -> dict:
    import resource

    import torch  # noqa: F401  (imported before the baseline, like everything the engine needs)
    import transformers  # noqa: F401

    import tuners  # noqa: F401
    from app.core.settings import Settings
    from app.core.spec import RunSpec
    from worker.engine import MemoryReporter, train

    task, targets = MODELS[model]
    peft_type, precision = RECIPES[recipe]
    emulated = compute == "bf16" and _force_bf16()
    _settle()
    baseline_kb, baseline_file_kb = _status_kb("VmRSS"), _status_kb("RssFile")

    class PeakReporter(MemoryReporter):
        ready_kb = 0
        ready_file_kb = 0
        train_peak_kb = 0

        def progress(self, step: int, total_steps: int) -> None:
            super().progress(step, total_steps)
            if step == 0:
                _settle()
                self.ready_kb = _status_kb("VmRSS")
                self.ready_file_kb = _status_kb("RssFile")
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
            elif step == total_steps:
                self.train_peak_kb = _status_kb("VmHWM")

    method: dict = {"peft_type": peft_type}
    if peft_type == "LORA":
        method.update(r=8, lora_alpha=16, target_modules=targets)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in _rows(task, seq_len)))
        spec = RunSpec.from_dict({
            "name": f"bench-memory-{recipe}",
            "model": {"name": model, "precision": precision, "double_quant": True},
            "data": {"dataset": str(data), "shape": "classification" if task == "SEQ_CLS" else "text",
                     "max_length": seq_len, "val_fraction": 0.1},
            "method": method,
            "training": {"max_steps": steps, "batch_size": batch, "learning_rate": 1e-4, "warmup_steps": 0,
                         "eval_every": 0, "seed": 0, "device": "cpu", "bf16": compute == "bf16"},
        })
        reporter = PeakReporter()
        start = time.perf_counter()
        train(spec, Path(tmp) / "out", reporter, Settings.from_env().models_dir)
        seconds = time.perf_counter() - start
    found = next((re.search(r"trainable parameters ([\d,]+)", line) for line in reporter.lines
                  if "trainable parameters" in line), None)
    return {
        "model": model, "task": task, "recipe": recipe, "peft_type": peft_type, "precision": precision,
        "compute": compute, "bf16_emulated": emulated, "seq_len": seq_len, "batch": batch, "steps": steps,
        "trainable_params": int(found.group(1).replace(",", "")) if found else None,
        "baseline_mib": round(baseline_kb / 1024, 1),
        "ready_mib": round((reporter.ready_kb - baseline_kb) / 1024, 1),
        "measured_mib": round((reporter.train_peak_kb - baseline_kb) / 1024, 1),
        # File-backed pages resident when training starts: an fp32 run's mapped weights; ≈ 0 for a
        # quantized run, whose fp32 checkpoint is released (see the docstring).
        "file_pages_at_ready_mib": round((reporter.ready_file_kb - baseline_file_kb) / 1024, 1),
        "load_peak_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) / 1024, 1),
        "seconds": round(seconds, 1),
    }


# ----------------------------------------------------------------------------- parent: estimate and table
def estimate_for(case: dict):
    """The estimate the model step shows for this case (same shape, method and numbers)."""
    from app.services import model_info

    info = model_info.describe_model(case["model"])
    return model_info.estimate_memory(
        info, case["trainable_params"], case.get("compute", "fp32"),
        "nf4-dq" if case["precision"] == "nf4" else "none", case["batch"], case["seq_len"],
        peft_type=case["peft_type"], data_shape="classification" if case["task"] == "SEQ_CLS" else None,
    )


def report(results: list[dict]) -> list[dict]:
    rows = []
    print(f"{'model':<24}{'recipe':<7}{'comp':<6}{'seq':>5}{'estimate MiB':>14}{'measured MiB':>14}{'ratio':>7}  "
          f"{'weights/train/act/logits (est. MiB)':<36}{'load peak':>10}{'file pages':>11}")
    for case in results:
        compute = case.get("compute", "fp32")
        if "error" in case:
            print(f"{case['model']:<24}{case['recipe']:<7}{compute:<6}{case['seq_len']:>5}  error: {case['error']}")
            continue
        est = estimate_for(case)
        total = est.total_bytes / 2**20
        ratio = total / case["measured_mib"]
        parts = "/".join(f"{b / 2**20:.0f}" for b in (est.weights_bytes, est.trainable_bytes,
                                                      est.activations_bytes, est.logits_bytes))
        flag = "" if abs(ratio - 1) <= TOLERANCE else "  OUT OF ±25%"
        print(f"{case['model']:<24}{case['recipe']:<7}{compute:<6}{case['seq_len']:>5}{total:>14.0f}"
              f"{case['measured_mib']:>14.0f}{ratio:>7.2f}  {parts:<36}{case['load_peak_mib']:>10.0f}"
              f"{case.get('file_pages_at_ready_mib', 0):>11.0f}{flag}")
        rows.append({**case, "estimate_mib": round(total, 1), "ratio": round(ratio, 3)})
    measured = {(r["model"], r["recipe"], r.get("compute", "fp32"), r["seq_len"]): r["measured_mib"] for r in rows}
    for (model, recipe, compute, seq_len), qlora in measured.items():
        lora = measured.get((model, "lora", compute, seq_len))
        if recipe == "qlora" and lora:
            print(f"QLoRA/LoRA {model} {compute} seq {seq_len}: {qlora:.0f} / {lora:.0f} MiB = {qlora / lora:.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="re-print saved measurements; train nothing")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--only", default="", help="comma-separated recipes (lora,qlora,full)")
    parser.add_argument("--compute", default=",".join(COMPUTE), help="comma-separated compute precisions (bf16,fp32)")
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "RECIPE", "SEQ_LEN", "COMPUTE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        model, recipe, seq_len, compute = args.child
        result = json.dumps(run_case(model, recipe, int(seq_len), compute, args.batch, args.steps))
        PARTIAL.parent.mkdir(parents=True, exist_ok=True)
        with open(PARTIAL, "a", encoding="utf-8") as f:  # kept even if a later case or the parent dies
            f.write(result + "\n")
        print(result)
        return
    if args.report:
        if OUT.exists():
            saved = json.loads(OUT.read_text())
        else:  # a run still going (or cut short): its finished cases
            saved = {"device": "cpu", "results": [json.loads(line) for line in PARTIAL.read_text().splitlines()]}
        rows = report(saved["results"])
        if OUT.exists():
            saved["results"] = rows
            OUT.write_text(json.dumps(saved, indent=2) + "\n")
        return

    from app.core.models import ensure_smollm2
    from app.core.settings import Settings

    ensure_smollm2(Settings.from_env().models_dir)  # the one-off GGUF conversion stays out of the figures
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", PYTHONPATH=str(ROOT),
               TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    recipes = [r for r in args.only.split(",") if r] or list(RECIPES)
    computes = [c for c in args.compute.split(",") if c]
    results = []
    started = time.perf_counter()
    for compute in computes:
        for model in MODELS:
            for recipe in recipes:
                for seq_len in SEQ_LENS:
                    cmd = [sys.executable, __file__, "--child", model, recipe, str(seq_len), compute,
                           "--batch", str(args.batch), "--steps", str(args.steps)]
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if proc.returncode != 0:
                        error = (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]
                        results.append({"model": model, "recipe": recipe, "compute": compute, "seq_len": seq_len,
                                        "error": error})
                    else:
                        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                    print(f"{model} {recipe} {compute} {seq_len}: {results[-1].get('error', 'done')} "
                          f"({time.perf_counter() - started:.0f} s so far)", file=sys.stderr)
    saved = {"device": "cpu", "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
             "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - started),
             "measured": "peak RSS during the training steps minus RSS after imports (see the docstring)",
             "results": results}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(saved, indent=2) + "\n")  # the measurements, before any estimate is computed
    saved["results"] = report(results) + [r for r in results if "error" in r]
    OUT.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""Does compiling the model's blocks pay on this machine? The engine's step, eager against compiled.

    nice -n 10 .venv/bin/python bench/compile.py                 # 8 steps each, on the CPU
    .venv/bin/python bench/compile.py --device cuda --steps 16   # on a GPU (bench/gpu_check.sh runs it)

The job is bench/speed.py's (the bundled SmolLM2-135M-Instruct, chatterbot conversations as chat,
LoRA r16 on all linear layers, batch 8, max_length 256), through the real engine with
``training.compile`` false and then true, each at the spec's default precision for the device. For
each: setup seconds (compiling included: worker.compilation compiles during setup), the median step
after the first ``--warmup`` steps, real tokens/s over those steps, the losses (compiled and eager
must agree within bf16 rounding), how many graphs dynamo compiled, and, from those, how many steps a
run needs before compiling has paid for itself. Written to ``bench/results/compile-<device>.json``.
This is what decides ``training.compile: auto`` per device (docs/runs.md "Engine speed").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speed import LEARNING_RATE, LORA_ALPHA, LORA_RANK, MODEL_NAME, SEED, job_conversations  # noqa: E402


def run(compile_: bool, device: str, data: Path, steps: int, batch: int, max_length: int, models_dir: Path,
        warmup: int) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from app.core.spec import RunSpec
    from worker.engine import MemoryReporter, TrainingRecipe

    class StepClock(MemoryReporter):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def progress(self, step: int, total_steps: int) -> None:
            super().progress(step, total_steps)
            self.ends.append(time.perf_counter())

    spec = RunSpec.from_dict({
        "name": "bench-compile", "model": {"name": MODEL_NAME},
        "data": {"dataset": str(data), "shape": "chat", "max_length": max_length, "val_fraction": 0.0, "dedupe": False},
        "method": {"peft_type": "LORA", "r": LORA_RANK, "lora_alpha": LORA_ALPHA, "lora_dropout": 0.0,
                   "target_modules": "all-linear"},
        "training": {"max_steps": steps, "batch_size": batch, "learning_rate": LEARNING_RATE, "eval_every": 0,
                     "seed": SEED, "device": device, "compile": compile_},
    })
    torch._dynamo.reset()
    counters.clear()
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        recipe = TrainingRecipe(spec, Path(out), clock, models_dir, resolver=lambda ref: Path(str(ref)))
        start = time.perf_counter()
        recipe.setup()
        setup_s = time.perf_counter() - start
        recipe.train()
    points = [p for p in clock.points if p.split == "train"]
    step_s = [b - a for a, b in zip(clock.ends, clock.ends[1:])]  # ends[0] is the loop's start
    timed = step_s[warmup:]
    return {
        "compile": compile_, "setup_seconds": round(setup_s, 2), "step_seconds": [round(s, 3) for s in step_s],
        "median_step_seconds": round(statistics.median(timed), 3) if timed else None,
        "tokens_per_second_after_warmup": round(statistics.fmean(p.tokens_per_second for p in points[warmup:]), 1)
        if points[warmup:] else None,
        "losses": [p.loss for p in points], "graphs": int(counters["stats"]["unique_graphs"]),
        "bf16": recipe.bf16, "log": [line for line in clock.lines if "speed:" in line or "memory:" in line],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the median (recompiles)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    from app.core.models import ensure_smollm2
    from app.core.settings import Settings

    settings = Settings.from_env()
    ensure_smollm2(settings.models_dir)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        data = Path(tmp) / "chatterbot-job.jsonl"
        conversations = job_conversations(args.steps * args.batch_size)
        data.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
        for compile_ in (False, True):
            print(f"compile {compile_} ...", flush=True)
            runs.append(run(compile_, args.device, data, args.steps, args.batch_size, args.max_length,
                            settings.models_dir, args.warmup))
    eager, compiled = runs
    speedup = saved = break_even = None
    if eager["median_step_seconds"] and compiled["median_step_seconds"]:
        speedup = eager["median_step_seconds"] / compiled["median_step_seconds"]
        saved = eager["median_step_seconds"] - compiled["median_step_seconds"]
        extra_setup = compiled["setup_seconds"] - eager["setup_seconds"]
        break_even = round(extra_setup / saved) if saved > 0 else None
    loss_gap = max(abs(a - b) for a, b in zip(eager["losses"], compiled["losses"], strict=True))
    for r in runs:
        print(f"compile {str(r['compile']):5}  setup {r['setup_seconds']:7.1f} s  median step "
              f"{r['median_step_seconds']} s  {r['tokens_per_second_after_warmup']} tokens/s  graphs {r['graphs']}")
    print(f"step speed-up {speedup and round(speedup, 3)}; compiling pays after {break_even} steps; "
          f"largest loss difference {loss_gap:.2e}")
    figures = {"job": {"model": MODEL_NAME, "device": args.device, "steps": args.steps, "batch_size": args.batch_size,
                       "max_length": args.max_length, "method": f"LoRA r{LORA_RANK} all-linear",
                       "cores": os.cpu_count(), "load_average": os.getloadavg()},
               "runs": runs, "step_speedup": speedup and round(speedup, 3), "break_even_steps": break_even,
               "largest_loss_difference": loss_gap}
    out = ROOT / "bench" / "results" / f"compile-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

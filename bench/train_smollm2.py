"""Benchmark: the bundled SmolLM2-135M-Instruct with LoRA on a few dozen chatterbot chat pairs, on CPU.

Runs the real engine (conversion from GGUF on first use, chat template, loss on responses only) and
prints steps/s, tokens/s and peak resident memory; writes the figures to bench/results/ as JSON.

    .venv/bin/python bench/train_smollm2.py [--pairs 48] [--steps 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.models import ensure_smollm2  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.core.spec import RunSpec  # noqa: E402
from worker.engine import MemoryReporter, train  # noqa: E402


def chat_pairs(limit: int) -> list[dict]:
    """Question/answer pairs from chatterbot-corpus's English YAML files, as chat messages."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    folder = Path(spec.origin).parent / "data" / "english"
    rows = []
    for file in sorted(folder.glob("*.yml")):
        for convo in yaml.safe_load(file.read_text()).get("conversations", []):
            if len(convo) >= 2 and all(isinstance(t, str) for t in convo[:2]):
                rows.append({"messages": [{"role": "user", "content": convo[0]},
                                          {"role": "assistant", "content": convo[1]}]})
            if len(rows) >= limit:
                return rows
    return rows


class TimedReporter(MemoryReporter):
    """Notes when step 0 starts and when the last step ends, to time the training loop alone."""

    def progress(self, step: int, total_steps: int) -> None:
        super().progress(step, total_steps)
        now = time.perf_counter()
        if step == 0:
            self.loop_start = now
        self.loop_end = now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    settings = Settings.from_env()
    t0 = time.perf_counter()
    ensure_smollm2(settings.models_dir)
    convert_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in chat_pairs(args.pairs)))
        spec = RunSpec.from_dict({
            "name": "bench-smollm2-lora",
            "model": {"name": "SmolLM2-135M-Instruct"},
            "data": {"dataset": str(data), "shape": "chat", "max_length": 128, "val_fraction": 0.1},
            "method": {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "attention"},
            "training": {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": 0.0003,
                         "warmup_steps": 2, "eval_every": 0, "seed": 0, "device": "cpu"},
        })
        reporter = TimedReporter()
        t1 = time.perf_counter()
        result = train(spec, Path(tmp) / "out", reporter, settings.models_dir)
        total_s = time.perf_counter() - t1
    train_points = [p for p in reporter.points if p.split == "train"]
    evals = [p.loss for p in reporter.points if p.split == "eval"]
    tokens = [p.tokens_per_second for p in train_points]
    figures = {
        "model": "SmolLM2-135M-Instruct", "method": "LoRA r=8 attention", "pairs": args.pairs,
        "steps": result.steps, "batch_size": args.batch_size, "device": "cpu",
        "run_seconds_including_load": round(total_s, 2),
        "training_loop_seconds": round(reporter.loop_end - reporter.loop_start, 2),
        "steps_per_second": round(result.steps / (reporter.loop_end - reporter.loop_start), 3),
        "mean_tokens_per_second": round(sum(tokens) / len(tokens), 1) if tokens else None,
        "first_train_loss": round(train_points[0].loss, 4), "last_train_loss": round(train_points[-1].loss, 4),
        "eval_loss_start": round(evals[0], 4) if evals else None, "eval_loss_end": round(evals[-1], 4) if evals else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "first_conversion_seconds": round(convert_s, 2),
        "python": platform.python_version(), "machine": platform.machine(),
    }
    print(json.dumps(figures, indent=2))
    out = ROOT / "bench" / "results" / "train_smollm2.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

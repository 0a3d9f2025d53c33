"""Does the studio's quick preset teach every method something, at the method's own learning rate?

    .venv/bin/python bench/quick_preset.py                        # every method, both tasks
    .venv/bin/python bench/quick_preset.py --tasks cls --methods IA3,LORA

Each run is what a person gets in the studio who picks the method, keeps its form defaults and the
quick preset (``app.services.wizard.preset_values("quick", method)``: 30 steps, batch 4, eval every
10, the method's declared learning rate), trained through the real engine (``worker.engine.train``):

- ``cls``: the bundled drug-review demo (3 sentiment classes) on the bundled all-MiniLM-L6-v2,
  sequences cut at 128 tokens. Passes when the final eval accuracy beats the majority class's share
  of the validation split (always answering the commonest label); "eval loss" is shown too.
- ``causal``: the bundled ChatterBot demo (chat) on a tiny random Llama with the SmolLM2 tokenizer
  (tests/support/tiny_models.py), 128 tokens. Passes when the eval loss at the end is below the eval
  loss at step 0 (same examples).

The table is printed and written to ``bench/results/quick_preset.json``. Runs one method at a time
in this process; a method that fails to build or train is reported with its error, not skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Llama-only methods (LLaMA-Adapter) and methods a BERT classifier cannot take are reported as such.
TASKS = ("cls", "causal")


def method_section(peft_type: str, task: str) -> dict:
    """The method section the studio's form gives for this method with its defaults untouched."""
    from app.services.method_form import HIDDEN_FIELDS, build_config, config_values, describe_method

    form = describe_method(peft_type)
    values = {f.name: f.form_default() for f in form.fields if f.name not in HIDDEN_FIELDS}
    config = build_config(peft_type, values, task_type=task)
    return {"peft_type": peft_type, **config_values(config)}


def spec_for(peft_type: str, task: str, model: str, dataset: str, steps: int | None, lr: float | None = None) -> dict:
    from app.services.wizard import preset_values

    p = preset_values("quick", peft_type)
    if lr is not None:
        p["learning_rate"] = lr
    cls = task == "cls"
    return {
        "name": f"quick-{task}-{peft_type.lower()}",
        "model": {"name": model, "task": "SEQ_CLS" if cls else "CAUSAL_LM"},
        "data": {"dataset": dataset, "shape": "classification" if cls else "auto", "max_length": 128},
        "method": method_section(peft_type, "SEQ_CLS" if cls else "CAUSAL_LM"),
        "training": {"epochs": p["epochs"], "max_steps": steps or p["max_steps"], "batch_size": p["batch_size"],
                     "learning_rate": p["learning_rate"], "eval_every": p["eval_every"], "device": "cpu",
                     "bf16": False},
    }


def majority_share(model: str, dataset: str, work: Path) -> float:
    """The majority class's share of the validation split the engine evaluates on (same seed, same
    preparation as every run here), i.e. the accuracy of always answering the commonest label."""
    from app.core.models import load_tokenizer, resolve_model
    from app.core.spec import RunSpec
    from app.data.pipeline import prepare_for_run
    from app.data.sources import resolve_dataset_file
    from worker.engine import MemoryReporter

    spec = RunSpec.from_dict(spec_for("LORA", "cls", model, dataset, None))
    tokenizer = load_tokenizer(resolve_model(spec.model.name, work / "models"), False)
    prepared, _ = prepare_for_run(spec, tokenizer, resolve_dataset_file, MemoryReporter().log)
    labels = Counter(int(e.get("label", e.get("labels"))) for e in prepared.eval)
    return max(labels.values()) / sum(labels.values())


def run_one(peft_type: str, task: str, model: str, dataset: str, work: Path, steps: int | None,
            lr: float | None = None) -> dict:
    from app.core.spec import RunSpec
    from worker.engine import MemoryReporter, train

    row: dict = {"method": peft_type, "task": task}
    started = time.perf_counter()
    try:
        spec = RunSpec.from_dict(spec_for(peft_type, task, model, dataset, steps, lr))
        row["lr"] = spec.training.learning_rate
        reporter = MemoryReporter()
        result = train(spec, work / f"{task}-{peft_type}", reporter, work / "models")
    except Exception as exc:  # noqa: BLE001 - a bench reports every failure and goes on
        row.update(error=f"{type(exc).__name__}: {exc}"[:300], seconds=round(time.perf_counter() - started, 1))
        return row
    evals = [p for p in reporter.points if p.split == "eval"]
    row.update(steps=result.steps, seconds=round(time.perf_counter() - started, 1),
               eval_loss_start=evals[0].loss if evals else None, eval_loss_end=evals[-1].loss if evals else None)
    # Same examples at both ends where the engine evaluates a sample before the last step.
    same = getattr(result, "last_sample_eval_loss", None)
    if same is not None:
        row["eval_loss_end_same_sample"] = same
    if task == "cls":
        row["accuracy_start"] = evals[0].accuracy if evals else None
        row["accuracy_end"] = evals[-1].accuracy if evals else None
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", help="comma-separated peft types (default: every method)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="cls, causal or both")
    ap.add_argument("--steps", type=int, help="override the quick preset's 30 steps (for a smoke check)")
    ap.add_argument("--lr", type=float, help="try another learning rate than the method's (to pick a default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quick_preset.json"))
    args = ap.parse_args()

    import torch

    import tuners
    from app.data.bundled import write_chatterbot, write_drug_reviews
    from tests.engine.helpers import save_tiny_model

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    methods = args.methods.split(",") if args.methods else list(tuners.METHODS)
    tasks = args.tasks.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="quick-preset-") as tmp:
        work = Path(tmp)
        # The demo files as the studio writes them when a person picks the demo.
        reviews, chats = write_drug_reviews(work / "data"), write_chatterbot(work / "data")
        share = majority_share("all-MiniLM-L6-v2", str(reviews), work)
        llama = save_tiny_model(work / "tiny-llama")
        for task in tasks:
            model, dataset = ("all-MiniLM-L6-v2", str(reviews)) if task == "cls" else (str(llama), str(chats))
            for peft_type in methods:
                row = run_one(peft_type, task, model, dataset, work, args.steps, args.lr)
                if task == "cls":
                    row["majority_share"] = round(share, 3)
                    acc = row.get("accuracy_end")
                    row["learned"] = acc is not None and acc > share
                else:
                    start, end = row.get("eval_loss_start"), row.get("eval_loss_end_same_sample",
                                                                        row.get("eval_loss_end"))
                    row["learned"] = start is not None and end is not None and end < start
                rows.append(row)
                print(format_row(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": "quick", "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"\n{table(rows)}\nwritten to {out}")
    return 0


def format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['task']:<6} {row['method']:<15} error: {row['error']}"
    if row["task"] == "cls":
        return (f"{row['task']:<6} {row['method']:<15} lr {row['lr']:<7g} accuracy {row['accuracy_start']:.3f} -> "
                f"{row['accuracy_end']:.3f} (majority {row['majority_share']:.3f}) "
                f"{'learned' if row['learned'] else 'NOT LEARNED'} {row['seconds']}s")
    end = row.get("eval_loss_end_same_sample", row["eval_loss_end"])
    return (f"{row['task']:<6} {row['method']:<15} lr {row['lr']:<7g} eval loss {row['eval_loss_start']:.3f} -> "
            f"{end:.3f} {'learned' if row['learned'] else 'NOT LEARNED'} {row['seconds']}s")


def table(rows: list[dict]) -> str:
    """A Markdown table for the docs and the closing note."""
    out = ["| task | method | lr | start | end | majority | learned |", "|---|---|---|---|---|---|---|"]
    # cls rows: accuracy (eval loss) at step 0 -> after the last step
    for r in rows:
        if "error" in r:
            out.append(f"| {r['task']} | {r['method']} | {r.get('lr', '')} | error: {r['error'][:80]} | | | no |")
        elif r["task"] == "cls":
            out.append(f"| cls | {r['method']} | {r['lr']:g} | acc {r['accuracy_start']:.3f} (loss "
                       f"{r['eval_loss_start']:.3f}) | acc {r['accuracy_end']:.3f} (loss {r['eval_loss_end']:.3f}) | "
                       f"{r['majority_share']:.3f} | {'yes' if r['learned'] else 'NO'} |")
        else:
            end = r.get("eval_loss_end_same_sample", r["eval_loss_end"])
            out.append(f"| causal | {r['method']} | {r['lr']:g} | loss {r['eval_loss_start']:.3f} | loss "
                       f"{end:.3f} | | {'yes' if r['learned'] else 'NO'} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

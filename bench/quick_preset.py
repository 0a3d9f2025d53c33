"""Does the studio's quick preset teach every method something, at the method's own learning rate?

    nice .venv/bin/python bench/quick_preset.py                             # every method, both tasks
    nice .venv/bin/python bench/quick_preset.py --task cls --methods LORA,IA3,PROMPT_TUNING
    nice .venv/bin/python bench/quick_preset.py --fresh --methods FISHMASK  # measure again

Each run is what a person gets in the studio who picks the method, keeps its form defaults and the
quick preset, sized for the data as the studio sizes it (``app.services.wizard.preset_values("quick",
method, task=..., train_rows=...)``: about one epoch in 30-150 steps of batch 8, three in up to 300 for a
classifier; the method's declared learning rate), trained through the real engine (``worker.engine.train``):

- ``cls``: the bundled drug-review demo (3 sentiment classes) on the bundled all-MiniLM-L6-v2,
  sequences cut at 128 tokens. Passes when the final eval accuracy (whole validation split) beats the
  majority class's share of that split (always answering the commonest label).
- ``causal``: the bundled ChatterBot demo (chat) on a tiny random Llama with the SmolLM2 tokenizer
  (tests/support/tiny_models.py), 128 tokens. Passes when the eval loss at the end is below the eval
  loss at step 0 on the same examples.

Resumable: every finished row is written to ``bench/results/quick_preset.json`` at once, and a later
call skips the (task, method) pairs already there with the same preset (lr, steps, batch) and no error,
so an interrupted table is finished by calling it again (``--fresh`` measures the chosen methods and
tasks again; rows of the others stay). The table of every row in the file is printed at the end. A
method that fails to build or train is reported with its error, not skipped.
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

TASKS = ("cls", "causal")
MODEL_TASK = {"cls": "SEQ_CLS", "causal": "CAUSAL_LM"}
MINILM = "all-MiniLM-L6-v2"
VAL_FRACTION = 0.1  # the studio's default


def method_section(peft_type: str, task: str) -> dict:
    """The method section the studio's form gives for this method with its defaults untouched."""
    from app.services.method_form import HIDDEN_FIELDS, build_config, config_values, describe_method

    form = describe_method(peft_type)
    values = {f.name: f.form_default() for f in form.fields if f.name not in HIDDEN_FIELDS}
    config = build_config(peft_type, values, task_type=task)
    return {"peft_type": peft_type, **config_values(config)}


def training_rows(dataset: Path) -> int:
    """The rows a run trains on as the studio counts them when it sizes a preset
    (``app.services.data_preview.training_rows``: the registered rows less the held-out share)."""
    from app.data import Limits, check_data_file
    from app.data.prepare import split_sizes

    return split_sizes(len(check_data_file(dataset, Limits()).table.rows), VAL_FRACTION)[0]


def spec_for(peft_type: str, task: str, model: str, dataset: Path, *, steps: int | None = None,
             lr: float | None = None, head_lr: float | None = None, device: str = "cpu") -> dict:
    from app.services.wizard import preset_values

    p = preset_values("quick", peft_type, task=MODEL_TASK[task], train_rows=training_rows(dataset))
    cls = task == "cls"
    return {
        "name": f"quick-{task}-{peft_type.lower()}",
        "model": {"name": model, "task": MODEL_TASK[task]},
        "data": {"dataset": str(dataset), "shape": "classification" if cls else "auto", "max_length": 128,
                 "val_fraction": VAL_FRACTION},
        "method": method_section(peft_type, MODEL_TASK[task]),
        "training": {"epochs": p["epochs"], "max_steps": steps or p["max_steps"] or None,
                     "batch_size": p["batch_size"], "learning_rate": lr or p["learning_rate"],
                     "eval_every": p["eval_every"], "device": device,
                     **({"head_learning_rate": head_lr} if head_lr else {})},
    }


def majority_share(dataset: Path, work: Path) -> float:
    """The majority class's share of the validation split the engine evaluates on at the end (same seed,
    same preparation as every run here): the accuracy of always answering the commonest label."""
    from app.core.models import load_tokenizer, resolve_model
    from app.core.spec import RunSpec
    from app.data.pipeline import prepare_for_run
    from app.data.sources import resolve_dataset_file
    from worker.engine import MemoryReporter

    spec = RunSpec.from_dict(spec_for("LORA", "cls", MINILM, dataset))
    tokenizer = load_tokenizer(resolve_model(spec.model.name, work / "models"), False)
    prepared, _ = prepare_for_run(spec, tokenizer, resolve_dataset_file, MemoryReporter().log)
    labels = Counter(int(e.get("label", e.get("labels"))) for e in prepared.eval)
    return max(labels.values()) / sum(labels.values())


def run_one(spec_dict: dict, task: str, work: Path) -> dict:
    from app.core.spec import RunSpec
    from worker.engine import MemoryReporter, train

    peft_type = spec_dict["method"]["peft_type"]
    t = spec_dict["training"]
    row: dict = {"task": task, "method": peft_type, "lr": t["learning_rate"], "head_lr": t.get("head_learning_rate"),
                 "steps": t["max_steps"], "batch_size": t["batch_size"]}
    started = time.perf_counter()
    try:
        spec = RunSpec.from_dict(spec_dict)
        reporter = MemoryReporter()
        result = train(spec, work / f"{task}-{peft_type}", reporter, work / "models")
    except Exception as exc:  # noqa: BLE001 - a bench reports every failure and goes on
        row.update(error=f"{type(exc).__name__}: {exc}"[:300], seconds=round(time.perf_counter() - started, 1))
        return row
    evals = [p for p in reporter.points if p.split == "eval"]
    row.update(steps=result.steps, seconds=round(time.perf_counter() - started, 1),
               eval_loss_start=result.first_eval_loss, eval_loss_end=result.last_eval_loss,
               eval_loss_end_same_sample=result.last_sample_eval_loss)
    if task == "cls":
        row["accuracy_start"] = evals[0].accuracy if evals else None
        row["accuracy_end"] = evals[-1].accuracy if evals else None
    return row


def judged(row: dict, share: float | None) -> dict:
    if "error" in row:
        row["learned"] = False
    elif row["task"] == "cls":
        row["majority_share"] = round(share, 3)
        row["learned"] = row.get("accuracy_end") is not None and row["accuracy_end"] > share
    else:
        start, end = row.get("eval_loss_start"), row.get("eval_loss_end_same_sample") or row.get("eval_loss_end")
        row["learned"] = start is not None and end is not None and end < start
    return row


def load_rows(path: Path) -> list[dict]:
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("rows", []))
    except (OSError, ValueError):
        return []


def save_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({"preset": "quick", "rows": rows}, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def same_run(row: dict, spec_dict: dict, task: str) -> bool:
    t = spec_dict["training"]
    return (row.get("task") == task and row.get("method") == spec_dict["method"]["peft_type"]
            and "error" not in row and row.get("lr") == t["learning_rate"] and row.get("steps") == t["max_steps"]
            and row.get("head_lr") == t.get("head_learning_rate")
            and row.get("batch_size") == t["batch_size"])


def main() -> int:
    import tuners

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", help=f"comma-separated peft types (default: all {len(tuners.METHODS)})")
    ap.add_argument("--task", "--tasks", dest="task", default="both", choices=(*TASKS, "both"))
    ap.add_argument("--steps", type=int, help="override the preset's steps (a smoke check; not resumed over)")
    ap.add_argument("--lr", type=float, help="try another learning rate than the method's (to pick a default)")
    ap.add_argument("--head-lr", type=float, help="a classifier head's rate (default: the studio's rule)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--fresh", action="store_true", help="measure the chosen rows again (the others in the file stay)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quick_preset.json"))
    args = ap.parse_args()

    import torch

    from app.data.bundled import write_chatterbot, write_drug_reviews
    from tests.engine.helpers import save_tiny_model

    torch.set_num_threads(max(1, args.threads))
    methods = args.methods.split(",") if args.methods else list(tuners.METHODS)
    unknown = [m for m in methods if m not in tuners.METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(tuners.METHODS)}")
    tasks = TASKS if args.task == "both" else (args.task,)
    out = Path(args.out)
    rows = load_rows(out)
    with tempfile.TemporaryDirectory(prefix="quick-preset-") as tmp:
        work = Path(tmp)
        # The demo files as the studio writes them when a person picks the demo.
        reviews, chats = write_drug_reviews(work / "data"), write_chatterbot(work / "data")
        share = majority_share(reviews, work) if "cls" in tasks else None
        llama = save_tiny_model(work / "tiny-llama") if "causal" in tasks else None
        for task in tasks:
            model, dataset = (MINILM, reviews) if task == "cls" else (str(llama), chats)
            for peft_type in methods:
                spec_dict = spec_for(peft_type, task, model, dataset, steps=args.steps, lr=args.lr,
                                     head_lr=args.head_lr, device=args.device)
                if not args.fresh and any(same_run(r, spec_dict, task) for r in rows):
                    print(f"{task:<6} {peft_type:<15} done before (in {out.name}); --fresh measures it again")
                    continue
                row = judged(run_one(spec_dict, task, work), share)
                rows = [r for r in rows if not (r.get("task") == task and r.get("method") == peft_type)] + [row]
                save_rows(out, rows)
                print(format_row(row), flush=True)
    print(f"\n{table(rows)}\n\nwritten to {out}")
    return 0


def _loss(row: dict) -> str:
    end = row.get("eval_loss_end_same_sample") or row.get("eval_loss_end")
    return f"{row['eval_loss_start']:.3f} -> {end:.3f}" if row.get("eval_loss_start") is not None else "?"


def format_row(row: dict) -> str:
    head = f"{row['task']:<6} {row['method']:<15} lr {row['lr']:<7g} {row.get('steps')} steps"
    if "error" in row:
        return f"{head} error: {row['error']}"
    verdict = f"{'learned' if row['learned'] else 'NOT LEARNED'} {row['seconds']}s"
    if row["task"] == "cls":
        return (f"{head} accuracy {row['accuracy_start']:.3f} -> {row['accuracy_end']:.3f} (majority "
                f"{row['majority_share']:.3f}) eval loss {_loss(row)} {verdict}")
    return f"{head} eval loss {_loss(row)} {verdict}"


def table(rows: list[dict]) -> str:
    """A Markdown table for docs/runs.md and the closing note (eval loss on the same sample at both ends)."""
    out = ["| task | method | lr | steps × batch | accuracy start → end | majority | eval loss start → end | "
           "learned |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (TASKS.index(r["task"]), r["method"])):
        size = f"{r.get('steps')} × {r.get('batch_size')}"
        if "error" in r:
            out.append(f"| {r['task']} | {r['method']} | {r['lr']:g} | {size} | error: {r['error'][:80]} | | | no |")
            continue
        accuracy = (f"{r['accuracy_start']:.3f} → {r['accuracy_end']:.3f}" if r["task"] == "cls" else "")
        share = f"{r['majority_share']:.3f}" if r["task"] == "cls" else ""
        out.append(f"| {r['task']} | {r['method']} | {r['lr']:g} | {size} | {accuracy} | {share} | "
                   f"{_loss(r).replace('->', '→')} | {'yes' if r['learned'] else 'NO'} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

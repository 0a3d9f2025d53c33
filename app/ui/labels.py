"""Every string the studio shows, in one table (one place to reword or translate)."""

from __future__ import annotations

LABELS: dict[str, str] = {
    "title": "TuneStudio",
    "tagline": "Fine-tune a language model in four steps: model, data, method, train. "
    "Runs keep going on the worker when you close the page.",
    # tabs
    "tab.new": "New run",
    "tab.run": "Run",
    "tab.runs": "Runs",
    "tab.playground": "Playground",
    # wizard
    "step.model": "1 · Model",
    "step.data": "2 · Data",
    "step.method": "3 · Method",
    "step.train": "4 · Train",
    "next": "Next →",
    "back": "← Back",
    "start_over": "Start over",
    # model step
    "model.bundled": "Bundled model",
    "model.bundled.info": "Works offline; nothing is downloaded.",
    "model.custom": "…or a local folder / hub id",
    "model.custom.info": "A folder with config.json and weights, or an id such as org/model. Overrides the list.",
    "model.custom.placeholder": "/path/to/model or org/model",
    "model.trust": "Trust remote code (only for models you trust)",
    "model.check": "Check model",
    "model.precision": "Compute precision",
    "model.quantization": "Base-weight quantization",
    "model.quantization.info": "NF4 with double quantization is QLoRA-style training.",
    "model.seq_len": "Sequence length for the estimate",
    "model.batch": "Batch size for the estimate",
    "model.info.empty": "Pick a model and press **Check model**.",
    "model.estimate": "Estimated training memory",
    # data step
    "data.upload": "Upload a dataset (CSV, TSV, JSON, JSONL, Parquet, TXT, or a zip of one)",
    "data.bundled": "…or a bundled demo dataset",
    "data.shape": "Detected format (change it if it is wrong)",
    "data.mapping": "Column mapping",
    "data.preview": "First rows",
    "data.val_fraction": "Validation split (fraction of rows held out)",
    "data.dedupe": "Remove exact repeats",
    "data.dedupe.info": "Examples that occur more than once are trained on once.",
    "data.max_length": "Max tokens per example",
    "data.empty": "Upload a file or pick a demo dataset.",
    "data.lengths": "Token lengths",
    # method step
    "method.choice": "PEFT method",
    "method.advanced": "Advanced settings",
    "method.count": "Trainable parameters",
    "method.count.pending": "Check a model in step 1 to count trainable parameters.",
    # train step
    "train.preset": "Preset",
    "train.preset.info": "quick: a short smoke run · balanced: a sensible default · thorough: longer. "
    "Every preset uses the chosen method's own learning rate.",
    "train.name": "Run name",
    "train.epochs": "Epochs",
    "train.lr": "Learning rate",
    "train.batch": "Batch size",
    "train.max_steps": "Max steps (0 = no limit)",
    "train.advanced": "Advanced training settings",
    "train.grad_accum": "Gradient accumulation steps",
    "train.warmup": "Warm-up steps",
    "train.scheduler": "LR schedule",
    "train.weight_decay": "Weight decay",
    "train.eval_every": "Evaluate every N steps (0 = only at the end)",
    "train.checkpoint_every": "Checkpoint every N steps (0 = off)",
    "train.seed": "Seed",
    "train.submit": "Start training",
    "train.yaml": "Equivalent spec (`tunestudio train spec.yaml`)",
    # --- train step: per-method learning rate (issue 11, recommended settings) ----------------------
    "train.lr.range": "{method} usually trains at a learning rate of {low} to {high} (default {default}).",
    "train.lr.too_high": "⚠ Warning: a learning rate of {lr} is about {times}× above what {method} usually takes; "
    "training may diverge or forget what the model knew.",
    "train.lr.too_low": "⚠ Warning: a learning rate of {lr} is about {times}× below what {method} usually takes; "
    "the run may learn almost nothing.",
    # run view
    "run.pick": "Run",
    "run.refresh": "Refresh",
    "run.none": "No run selected. Start one in **New run** or pick one above.",
    "run.loss": "Loss",
    "run.loss.legend": "curve",
    "run.log": "Log",
    "run.cancel": "Cancel run",
    "run.download": "Download adapter (.zip)",
    "run.download_merged": "Download merged model (.zip)",
    "run.prepare_merged": "Build merged model (adapter folded into the weights)",
    # runs tab
    "runs.filter.status": "Status",
    "runs.filter.text": "Search (name, model, method)",
    "runs.table": "All runs",
    "runs.select": "Run for details",
    "runs.config": "Full config (the YAML `tunestudio train` accepts)",
    "runs.download_yaml": "Download spec.yaml",
    "runs.delete": "Delete run and its files",
    "runs.delete.confirm": "Yes, delete it",
    "runs.compare": "Compare loss curves",
    "runs.compare.chart": "Eval (or train) loss of the selected runs",
    "runs.compare.legend": "run",
    "runs.open": "Open in run view",
    "runs.reuse": "New run from this one",
    # playground
    "play.run": "Finished run",
    "play.prompt": "Prompt",
    "play.prompt.placeholder": "Ask something, or paste a text to classify",
    "play.max_new_tokens": "Max new tokens",
    "play.temperature": "Temperature (0 = greedy)",
    "play.top_p": "Top-p",
    "play.generate": "Generate",
    "play.classify": "Classify",
    "play.base": "Base model",
    "play.tuned": "Tuned (with adapter)",
    "play.empty": "Finish a run first; then pick it here.",
}


def t(key: str, **values: object) -> str:
    """The label for ``key`` with ``{name}`` placeholders filled in."""
    text = LABELS[key]
    return text.format(**values) if values else text

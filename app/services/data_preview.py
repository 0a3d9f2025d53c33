"""The data step's view of a file: register it, detect its shape, preview rows and token lengths.

A thin wrapper over ``app.data`` (the parsing rules live there) and ``app.services.datasets``
(where files are stored). Every failure comes back as a message naming the file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.refs import dataset_id_of
from app.core.tasks import SHAPES, is_classification
from app.services import datasets
from app.services.context import Context

PREVIEW_ROWS = 8


@dataclass
class DataPreview:
    dataset_ref: str
    name: str
    fmt: str
    rows: int
    columns: list[str]
    shape: str
    confidence: float
    mapping: dict[str, str]
    roles: list[str]
    ignored_columns: list[str]
    head: list[dict]
    stats: dict[str, Any] = field(default_factory=dict)
    histogram_png: bytes | None = None
    problem: str | None = None


def shapes() -> list[str]:
    return list(SHAPES)


def roles_for(shape: str) -> list[str]:
    """The fields a shape maps columns onto (e.g. instruction/input/output)."""
    from app.data.shapes import ROLES

    return list(ROLES.get(shape, {}))


def register_upload(ctx: Context, path: str | Path, original_name: str | None = None, shape: str | None = None,
                    mapping: dict[str, str] | None = None) -> datasets.DatasetView:
    """Check, store and register an uploaded file exactly as ``tunestudio datasets add`` does (the same
    ``add_dataset``): a refused file raises its DataError, and nothing is kept."""
    return datasets.add_dataset(ctx, path, name=original_name, shape=shape, mapping=mapping)


DEMO_DESCRIPTIONS = {
    "drug-reviews": "drug reviews → sentiment (3 classes, classification)",
    "chatterbot": "ChatterBot question/answer conversations (chat)",
}


def bundled_choices() -> list[tuple[str, str]]:
    """(label, name) of the offline demo datasets."""
    from app.data import bundled_datasets

    return [(f"{name}: {DEMO_DESCRIPTIONS.get(name, '')}".rstrip(": "), name) for name in bundled_datasets()]


def register_bundled(ctx: Context, name: str) -> datasets.DatasetView:
    """Write a demo dataset as an ordinary file inside the artifacts folder and register it like an upload."""
    from app.data import bundled_datasets

    writers = bundled_datasets()
    if name not in writers:
        raise LookupError(f"no demo dataset named {name!r}; have {', '.join(writers)}")
    folder = ctx.settings.artifacts_dir / "demo-data"
    folder.mkdir(parents=True, exist_ok=True)
    path = writers[name](folder)
    return datasets.add_dataset(ctx, path, name=Path(path).name)


def _table_for(ctx: Context, ref: str):
    from app.data import Limits, read_table

    dataset_id = dataset_id_of(ref)
    if dataset_id is not None:
        view = datasets.get_dataset(ctx, dataset_id)
        return read_table(view.path, name=view.name, limits=Limits(max_bytes=ctx.settings.max_upload_bytes)), view.name
    raise LookupError(f"{ref!r} is not a registered dataset (expected dataset:N)")


# Previews by (dataset content, shape, mapping, tokenizer, max length): a registered dataset never
# changes (its sha256 names it), and the wizard redoes the same preview on every reload and "new run
# from this one" (tokenizing every row for the statistics: seconds on a busy CPU).
_PREVIEWS: dict[tuple, DataPreview] = {}
_PREVIEWS_MAX = 8


def preview(
    ctx: Context, ref: str, shape: str | None = None, mapping: dict[str, str] | None = None,
    tokenizer: Any = None, max_length: int = 512,
) -> DataPreview:
    """Detect (or apply the user's) shape and mapping, and compute the preview statistics (cached per
    dataset and settings, see ``_PREVIEWS``; callers only read what it returns)."""
    dataset_id = dataset_id_of(ref)
    view = datasets.get_dataset(ctx, dataset_id) if dataset_id is not None else None
    if view is None:
        return _preview(ctx, ref, shape, mapping, tokenizer, max_length)
    tokenizer_key = None if tokenizer is None else (getattr(tokenizer, "name_or_path", None), len(tokenizer),
                                                   type(tokenizer).__name__)
    key = (view.sha256, view.path, shape, tuple(sorted((mapping or {}).items())), tokenizer_key, int(max_length))
    if key not in _PREVIEWS:
        if len(_PREVIEWS) >= _PREVIEWS_MAX:
            _PREVIEWS.pop(next(iter(_PREVIEWS)))
        _PREVIEWS[key] = _preview(ctx, ref, shape, mapping, tokenizer, max_length)
    return _PREVIEWS[key]


def _preview(ctx: Context, ref: str, shape: str | None, mapping: dict[str, str] | None, tokenizer: Any,
             max_length: int) -> DataPreview:
    from app.data import DataError, detect_shape
    from app.data.check import check_table, chosen_layout

    table, name = _table_for(ctx, ref)
    detection = detect_shape(table)
    chosen_shape, chosen_mapping = chosen_layout(detection, shape, mapping)
    problem = None
    try:  # the check `datasets add` and the upload make, on the layout shown
        check_table(table, chosen_shape, chosen_mapping)
    except DataError as exc:
        problem = str(exc)
    out = DataPreview(
        dataset_ref=ref, name=name, fmt=str(table.fmt), rows=len(table.rows), columns=list(table.columns),
        shape=chosen_shape, confidence=float(getattr(detection, "confidence", 0.0)),
        mapping=chosen_mapping, roles=roles_for(chosen_shape),
        ignored_columns=list(getattr(detection, "ignored_columns", []) or []),
        head=table.rows[:PREVIEW_ROWS], problem=problem,
    )
    if problem is None and tokenizer is not None:
        out.stats, out.histogram_png = statistics(table, chosen_shape, chosen_mapping, tokenizer, max_length)
    return out


_LABELS_CACHE: dict[tuple, list[str] | None] = {}


def label_names(ctx: Context, ref: str | None, shape: str | None, mapping: dict[str, str] | None = None
                ) -> list[str] | None:
    """The classes a classification run on this data will have, by the engine's own rule
    (``label_names_of`` over every row), so the method step's trainable count sizes the head as the run
    does; None for other shapes or when the data cannot be read (the data step shows that problem)."""
    from app.data import normalise_rows
    from app.data.prepare import label_names_of

    if not ref or not is_classification(shape):
        return None
    try:
        dataset_id = dataset_id_of(ref)
        view = datasets.get_dataset(ctx, dataset_id) if dataset_id is not None else None
        if view is None:
            return None
        key = (view.sha256, shape, tuple(sorted((mapping or {}).items())))
        if key not in _LABELS_CACHE:  # keyed by content: the count reruns on every method field change
            table, _ = _table_for(ctx, ref)
            chosen = dict(mapping) if mapping else _detected_mapping(table, shape)
            if len(_LABELS_CACHE) > 16:
                _LABELS_CACHE.clear()
            _LABELS_CACHE[key] = label_names_of(normalise_rows(table, shape, chosen))
        return _LABELS_CACHE[key]
    except Exception:
        return None


def _detected_mapping(table: Any, shape: str) -> dict[str, str]:
    from app.data import detect_shape

    detection = detect_shape(table)
    return dict(detection.mapping) if str(getattr(detection.shape, "value", detection.shape)) == shape else {}


def statistics(table: Any, shape: str, mapping: dict[str, str], tokenizer: Any, max_length: int):
    from app.data import length_histogram_png, preview_stats

    stats = preview_stats(table, shape, mapping, tokenizer, max_length)
    return stats, length_histogram_png(stats)


def split_figures(stats: dict[str, Any], val_fraction: float = 0.0, dedupe: bool = True) -> tuple[int, int]:
    """(training, validation) rows as the engine will split them: repeats removed first, then the
    engine's own rule (``app.data.prepare.split_sizes``), so the figures match the run log exactly."""
    from app.data.prepare import split_sizes

    rows = int(stats.get("rows", 0))
    used = rows - int(stats.get("duplicates") or 0) if dedupe else rows
    return split_sizes(used, float(val_fraction or 0))


def training_rows(ctx: Context, ref: str | None, val_fraction: float = 0.1) -> int | None:
    """About how many rows a run on this registered dataset trains on (its rows less the held-out
    share, by ``split_sizes``; repeats not yet removed), for sizing a preset; None when not known."""
    from app.data.prepare import split_sizes

    try:
        dataset_id = dataset_id_of(ref) if ref else None
        view = datasets.get_dataset(ctx, dataset_id) if dataset_id is not None else None
    except Exception:
        return None
    return split_sizes(int(view.rows), float(val_fraction or 0))[0] if view is not None and view.rows else None


def summary_rows(stats: dict[str, Any], val_fraction: float = 0.0, dedupe: bool = True) -> list[tuple[str, str]]:
    """The preview statistics a person reads: rows, repeats, split, token lengths, truncation, labels."""
    if not stats:
        return []
    rows = int(stats.get("rows", 0))
    duplicates = int(stats.get("duplicates") or 0)
    out = [("Rows", f"{rows:,}")]
    if duplicates:
        fate = "removed before training" if dedupe else "kept (de-duplication is off)"
        out.append(("Exact repeats", f"{duplicates:,}, {fate}"))
    train_rows, held_out = split_figures(stats, val_fraction, dedupe)
    out.append(("Training / validation", f"{train_rows:,} / {held_out:,}"))
    tokens = stats.get("tokens") or {}
    if tokens.get("count"):
        out.append(("Tokens per example", f"min {tokens['min']} · mean {tokens['mean']:.1f} · median {tokens['p50']}"
                                          f" · p95 {tokens['p95']} · max {tokens['max']}"))
    for key, label in (("truncated", "Truncated to max tokens"), ("dropped", "Dropped")):
        value = stats.get(key)
        if isinstance(value, int | float):
            out.append((label, f"{value:,}"))
    balance = stats.get("label_balance") or {}
    if balance:
        out.append(("Label balance", ", ".join(f"{k}: {v}" for k, v in balance.items())))
    return out

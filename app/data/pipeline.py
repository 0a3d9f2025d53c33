"""A run's data, start to finish: resolve the reference, read, map to a shape, check, tokenize, split.

The engine calls :func:`prepare_for_run` as its data stage; the studio's preview and ``datasets add``
use the same readers and checks, so all three refuse the same files with the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core.spec import RunSpec, SpecError
from app.core.tasks import task_for as default_task
from app.data.prepare import Prepared, PrepareOptions, prepare
from app.data.readers import Table, read_table
from app.data.shapes import detect_shape, validate_mapping
from app.data.sources import DatasetResolver

Log = Callable[[str], Any]


def prepare_for_run(
    spec: RunSpec, tokenizer: Any, resolver: DatasetResolver, log: Log, max_positions: int | None = None
) -> tuple[Prepared, str]:
    """Read, map, check and tokenize the run's data; returns the prepared examples and the task type."""

    def read(ref: str | int) -> Table:
        table = read_table(resolver(ref))
        if spec.data.max_rows is not None and len(table.rows) > spec.data.max_rows:
            table.rows = table.rows[: spec.data.max_rows]
        return table

    table = read(spec.data.dataset)
    val_table = read(spec.data.validation) if spec.data.validation is not None else None
    if spec.data.shape == "auto" or not spec.data.mapping:
        detection = detect_shape(table)
        shape = detection.shape if spec.data.shape == "auto" else spec.data.shape
        mapping = dict(spec.data.mapping or (detection.mapping if shape == detection.shape else {}))
        log(f"data: detected shape {detection.shape} mapping {detection.mapping} "
            f"(confidence {detection.confidence:.2f})")
    else:
        shape, mapping = spec.data.shape, dict(spec.data.mapping)
    validate_mapping(table, shape, mapping)
    task = spec.task if spec.task_is_fixed else default_task(shape)
    max_length = spec.data.max_length
    if max_positions is not None and max_length > max_positions:
        log(f"data: max_length {max_length} is longer than the model's {max_positions} positions; "
            f"using {max_positions}")
        max_length = max_positions
    options = PrepareOptions(
        max_length=max_length, packing=spec.data.packing, val_fraction=spec.data.val_fraction,
        seed=spec.training.seed, dedupe=spec.data.dedupe, task=task,
    )
    prepared = prepare(table, shape, mapping, tokenizer, options, val_table=val_table)
    log(data_summary(prepared.stats, table.source, len(prepared.train), len(prepared.eval)))
    if not prepared.train:
        raise SpecError("data", "no training examples left after preparation")
    return prepared, task


def data_summary(stats: dict[str, Any], source: str, n_train: int, n_eval: int) -> str:
    """The run log's data line. Its training / validation row figures are the data preview's
    (repeats removed, then split by ``split_sizes``); rows dropped afterwards are counted apart."""
    line = (f"data: {stats.get('train_rows', n_train):,} training / {stats.get('eval_rows', n_eval):,} "
            f"validation rows from {source} (shape {stats.get('shape')})")
    repeats = stats.get("duplicates_removed") or 0
    if repeats:
        line += f"; {repeats:,} exact repeats removed"
    dropped = stats.get("dropped") or 0
    if dropped:
        line += f"; {dropped:,} dropped (nothing to learn after truncation, or a label unseen in training)"
    if dropped or stats.get("packed"):
        line += f"; {stats.get('examples_train', n_train):,} / {n_eval:,} examples"
    if stats.get("packed"):
        line += f", packed into {n_train:,} blocks"
    return line

"""Checked records -> the token examples a run trains on: repeats removed, split, tokenized, packed.

The order is the rule the data preview shares (:func:`split_sizes`): exact repeats go first, the
split is drawn on the distinct rows (seeded), and only then are rows tokenized, with a batched
``Dataset.map`` over the Arrow records (:class:`app.data.builder.Builder` per batch). The examples
stay in Arrow: the splits are index views over the tokenized file, and :class:`Prepared` hands the
engine :class:`ExampleSet` s, never Python lists of the whole data. With a folder every file lands
there (memory-mapped; the pipeline caches the folder); without one everything stays in memory.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value

from app.core.tasks import CLASSIFICATION_SHAPES, TASKS, task_for
from app.data.builder import IGNORE, OUTCOME_COLUMNS, Builder, Tokenized
from app.data.errors import DataError
from app.data.examples import ExampleSet
from app.data.readers import Table
from app.data.records import Records, check_records, first_of_each
from app.data.shapes import normalise_rows
from app.data.stats import summarise
from app.data.store import BatchWriter

__all__ = ["IGNORE", "PREPARE_VERSION", "Prepared", "PrepareOptions", "Tokenized", "label_names_of", "pack",
           "prepare", "prepare_records", "split_sizes", "tokenize_rows"]

# Part of every cache key (app.data.cache): bump it whenever the examples made from the same data and
# options change, so no run trains on examples an older version prepared.
PREPARE_VERSION = 2  # 2: packed blocks carry position_ids restarting at each example
MAP_BATCH = 1000
_LISTED = 100  # truncated/dropped rows listed by number; the counts are always complete
_PACKED_FEATURES = Features({"input_ids": List(Value("int32")), "attention_mask": List(Value("int8")),
                             "labels": List(Value("int32")), "position_ids": List(Value("int32"))})


@dataclass
class PrepareOptions:
    max_length: int = 512
    packing: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    dedupe: bool = False
    task: str = "CAUSAL_LM"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError("bad_option", f"task '{self.task}' is not one of {', '.join(TASKS)}", field="task")
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= 1_048_576:
            raise DataError("bad_option", f"max_length {self.max_length!r} must be a whole number from 8",
                            field="max_length")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise DataError("bad_option", f"val_fraction {self.val_fraction!r} must be in [0, 1)",
                            field="val_fraction")
        if self.packing and self.task != "CAUSAL_LM":
            raise DataError("bad_option", "packing applies to causal language models only", field="packing")


@dataclass
class Prepared:
    """The splits as Arrow-backed sequences of example dicts, the class names, and what happened.

    ``layout`` says which files of the preparation folder hold each split (None in memory);
    ``timings`` are seconds per stage of this preparation (not part of the cached result)."""

    train: ExampleSet
    eval: ExampleSet
    label_names: list[str] | None
    stats: dict = field(default_factory=dict)
    layout: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)


def label_order(names: Iterable[str]) -> list[str]:
    """Class names in a stable order: numerically when every label is a whole number, else by text."""
    values = set(names)
    if all(_is_int(v) for v in values):
        return sorted(values, key=lambda v: int(v))
    return sorted(values)


def label_names_of(records: list[dict]) -> list[str]:
    return label_order(str(r["label"]) for r in records)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def split_sizes(rows: int, fraction: float) -> tuple[int, int]:
    """(training, validation) rows for ``rows`` distinct rows: the one rule the data preview and the
    engine share, so the figures the data step shows are the ones the run log reports.

    At least one validation row when a fraction is asked for, and at least one training row.
    """
    if fraction <= 0 or rows < 2:
        return rows, 0
    n_eval = min(rows - 1, max(1, round(rows * fraction)))
    return rows - n_eval, n_eval


def _split(indices: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of ``indices`` into (training, validation) of :func:`split_sizes`."""
    _, n_eval = split_sizes(len(indices), fraction)
    if not n_eval:
        return list(indices), []
    order = list(indices)
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def _blocks(examples: Iterable[dict], max_length: int) -> Iterator[dict]:
    """Greedy, in order: whole examples share a block while they fit; none is ever split. A block's
    ``position_ids`` restart at 0 at each of its examples, which is how the engine tells them apart."""
    current: dict | None = None
    for ex in examples:
        if current is not None and len(current["input_ids"]) + len(ex["input_ids"]) <= max_length:
            for key in ("input_ids", "attention_mask", "labels"):
                current[key].extend(ex[key])
        else:
            if current is not None:
                yield current
            current = {k: list(ex[k]) for k in ("input_ids", "attention_mask", "labels")}
            current["position_ids"] = []
        current["position_ids"].extend(range(len(ex["input_ids"])))
    if current is not None:
        yield current


def pack(examples: Iterable[dict], max_length: int) -> list[dict]:
    """Pack examples into blocks of at most ``max_length`` tokens (see :func:`_blocks`).

    Where the engine trains padding-free (worker.packing) each example of a block attends only to
    itself and predicts nothing of the next; where it pads, a block is one sequence; see docs/data.md.
    """
    return list(_blocks(examples, max_length))


def outcomes(table: Table, items: list[Tokenized]) -> dict:
    """Truncated and dropped rows of ``items`` (the preview's rows), counted and the first ones listed."""
    truncated = [t for t in items if t.truncated and t.example is not None]
    dropped = [t for t in items if t.example is None]

    def listed(rows: list[Tokenized]) -> list[dict]:
        return [{"index": t.index, "row": t.index + 1, "line": table.line_of(t.index), "tokens": t.length,
                 "reason": t.reason} for t in rows[:_LISTED]]

    return {"truncated": len(truncated), "truncated_rows": listed(truncated),
            "dropped": len(dropped), "dropped_rows": listed(dropped)}


# --- tokenized rows ----------------------------------------------------------------------------


class _Tokens:
    """Some rows of one file, tokenized in order: ``origin[p]`` is the file row at position ``p``."""

    def __init__(self, records: Records, rows: list[int], builder: Builder, path: Path | None) -> None:
        self.records, self.origin = records, np.asarray(rows, dtype=np.int64)
        source = records.dataset.select_columns(records.roles)
        if len(rows) != len(records):
            source = source.select(rows)
        place = {"cache_file_name": str(path)} if path is not None else {"keep_in_memory": True}
        if not rows:  # map hands an empty dataset back unchanged, with the record columns
            self.dataset = BatchWriter(path, builder.features).finish()
        else:
            self.dataset = source.map(
                builder.batch, batched=True, batch_size=MAP_BATCH, features=builder.features,
                remove_columns=source.column_names, new_fingerprint=uuid.uuid4().hex, load_from_cache_file=False,
                **place,
            )
        self.path = path
        table = self.dataset.data
        self.kept = table.column("kept").to_numpy(zero_copy_only=False)
        self.length = table.column("length").to_numpy()
        self.truncated = table.column("truncated").to_numpy(zero_copy_only=False)

    def positions(self, rows: list[int]) -> np.ndarray:
        """Positions of file ``rows`` (sorted, all tokenized here)."""
        return np.searchsorted(self.origin, np.asarray(rows, dtype=np.int64))

    def outcomes(self, positions: np.ndarray) -> dict:
        truncated = positions[self.truncated[positions] & self.kept[positions]]
        dropped = positions[~self.kept[positions]]
        reasons = self.dataset.data.column("reason")

        def listed(chosen: np.ndarray) -> list[dict]:
            out = []
            for p in chosen[:_LISTED].tolist():
                index = int(self.origin[p])
                out.append({"index": index, "row": index + 1, "line": self.records.line_of(index),
                            "tokens": int(self.length[p]), "reason": reasons[p].as_py()})
            return out

        return {"truncated": len(truncated), "truncated_rows": listed(truncated),
                "dropped": len(dropped), "dropped_rows": listed(dropped)}

    def examples(self, positions: np.ndarray, indices_path: Path | None) -> tuple[Dataset, dict | None]:
        """The kept examples at ``positions``: an index view over the tokenized file, and how to
        reopen it (``{"data", "indices"}`` file names) when it lives in a folder."""
        chosen = positions[self.kept[positions]]
        if self.path is None:
            return self.dataset.select(chosen, keep_in_memory=True).remove_columns(list(OUTCOME_COLUMNS)), None
        writer = BatchWriter(indices_path, Features({"indices": Value("uint64")}), batch_rows=1 << 20)
        for p in chosen.tolist():
            writer.add(p)
        writer.finish()
        layout = {"data": self.path.name, "indices": indices_path.name}
        return open_split(self.path.parent, layout), layout


def open_split(folder: Path, layout: dict) -> Dataset:
    """One split of a preparation folder, memory-mapped, with only the example columns."""
    indices = str(folder / layout["indices"]) if layout.get("indices") else None
    dataset = Dataset.from_file(str(folder / layout["data"]), indices_filename=indices)
    outcome = [c for c in OUTCOME_COLUMNS if c in dataset.column_names]
    return dataset.remove_columns(outcome) if outcome else dataset


def _pack_dataset(train: Dataset, max_length: int, path: Path | None) -> Dataset:
    writer = BatchWriter(path, _PACKED_FEATURES, batch_rows=1024)
    for block in _blocks(ExampleSet(train), max_length):
        writer.add(block["input_ids"], block["attention_mask"], block["labels"], block["position_ids"])
    return writer.finish()


# --- preparation -------------------------------------------------------------------------------


def _check_validation_labels(val: Records, label_names: list[str]) -> None:
    known = set(label_names)
    for i, name in enumerate(val.labels().to_pylist()):
        if name not in known:
            raise DataError(
                "unknown_label", f"the label '{name}' does not occur in the training file",
                file=val.source, line=val.line_of(i), row=i + 1, field=val.mapping["label"],
                hint=f"Use one of: {', '.join(label_names[:20])}",
            )


def prepare_records(
    train: Records, tokenizer, options: PrepareOptions | None = None, *, val: Records | None = None,
    folder: Path | None = None,
) -> Prepared:
    """Remove repeats, split (seeded, or ``val``), tokenize and report what happened.

    With ``folder`` the tokenized files and split indices are written there and ``layout`` names
    them; the tokenizer is called only inside the batched ``map``."""
    options = options or PrepareOptions()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    shape = train.shape
    label_names = label_order(train.classes) if shape in CLASSIFICATION_SHAPES and train.classes else None
    if val is not None and label_names:
        _check_validation_labels(val, label_names)
    # Repeats go first, then the split: the split sizes then follow from the distinct rows alone
    # (split_sizes), which the data preview knows before any seed is chosen.
    kept = first_of_each(train.keys()) if options.dedupe else list(range(len(train)))
    duplicates = len(train) - len(kept)
    if val is None:
        train_idx, eval_idx = _split(kept, float(options.val_fraction), options.seed)
    else:
        train_idx, eval_idx = kept, list(range(len(val)))
        if options.dedupe:
            eval_idx = first_of_each(val.keys(), seen=train.keys())
            duplicates += len(val) - len(eval_idx)
    timings["dedupe_split"] = time.perf_counter() - started

    started = time.perf_counter()
    builder = Builder(tokenizer, shape, options.task, options.max_length, label_names)

    def file(name: str) -> Path | None:
        return folder / name if folder is not None else None

    tokens = _Tokens(train, kept, builder, file("train-tokens.arrow"))
    train_at = tokens.positions(train_idx)
    if val is None:
        eval_tokens, eval_at = tokens, tokens.positions(eval_idx)
    else:
        eval_tokens = _Tokens(val, eval_idx, builder, file("val-tokens.arrow"))
        eval_at = np.arange(len(eval_idx), dtype=np.int64)
    timings["tokenize"] = time.perf_counter() - started
    timings["tokenized_rows"] = float(len(kept) + (len(eval_idx) if val is not None else 0))

    started = time.perf_counter()
    train_ds, train_layout = tokens.examples(train_at, file("train.indices.arrow"))
    eval_ds, eval_layout = eval_tokens.examples(eval_at, file("eval.indices.arrow"))
    if not train_ds.num_rows:
        raise DataError("no_examples", "no training example is left after truncation and checks",
                        file=train.source, hint="Raise max_length or check the mapped columns")
    unpacked = train_ds.num_rows
    if options.packing:
        train_ds = _pack_dataset(train_ds, options.max_length, file("train-packed.arrow"))
        train_layout = {"data": "train-packed.arrow", "indices": None} if folder is not None else None
    train_out, eval_out = tokens.outcomes(train_at), eval_tokens.outcomes(eval_at)
    stats = {
        "shape": shape, "mapping": dict(train.mapping), "task": options.task, "max_length": options.max_length,
        "rows": len(train), "eval_rows": len(eval_idx), "train_rows": len(train_idx),
        "eval_source": val.source if val is not None else "split",
        "duplicates_removed": duplicates,
        "examples_train": unpacked, "examples_eval": eval_ds.num_rows,
        "packed": options.packing, "blocks": train_ds.num_rows if options.packing else None,
        "label_names": label_names,
        "tokens": summarise(tokens.length[train_at].tolist()),
        "train": train_out,
        "eval": eval_out,
        "truncated": train_out["truncated"] + eval_out["truncated"],
        "dropped": train_out["dropped"] + eval_out["dropped"],
    }
    layout = {"train": train_layout, "eval": eval_layout} if folder is not None else None
    timings["split_stats"] = time.perf_counter() - started
    return Prepared(ExampleSet(train_ds), ExampleSet(eval_ds), label_names, stats, layout, timings)


def prepare(
    table: Table, shape: str, mapping: dict[str, str], tokenizer, options: PrepareOptions | None = None, *,
    val_table: Table | None = None, folder: Path | None = None,
) -> Prepared:
    """Check every row, tokenize, split (seeded, or ``val_table``), and report what happened.

    The in-memory entry point (a table already read); runs read their files through
    :func:`app.data.pipeline.prepare_for_run`, which streams and caches."""
    train = check_records(table, shape, mapping, folder / "train-records.arrow" if folder else None)
    val = (check_records(val_table, shape, mapping, folder / "val-records.arrow" if folder else None,
                         need_classes=False) if val_table is not None else None)
    return prepare_records(train, tokenizer, options, val=val, folder=folder)


def tokenize_rows(table: Table, shape: str, mapping: dict[str, str], tokenizer, max_length: int,
                  task: str | None = None) -> tuple[list[Tokenized], list[dict], list[str] | None]:
    """Every row tokenized as training would see it (no split), for the preview."""
    records = normalise_rows(table, shape, mapping)
    label_names = label_names_of(records) if shape in CLASSIFICATION_SHAPES else None
    builder = Builder(tokenizer, shape, task or task_for(shape), max_length, label_names)
    items = [item for start in range(0, len(records), MAP_BATCH)
             for item in _offset(builder.build(records[start : start + MAP_BATCH]), start)]
    return items, records, label_names


def _offset(items: list[Tokenized], start: int) -> list[Tokenized]:
    for item in items:
        item.index += start
    return items


def describe_timings(timings: dict[str, Any]) -> str:
    """One line for a log: seconds per stage."""
    return ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if not k.endswith("_rows"))

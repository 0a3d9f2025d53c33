"""A run's data, start to finish: resolve the reference, read, map to a shape, check, tokenize, split.

The engine calls :func:`prepare_for_run` as its data stage; the studio's preview and ``datasets add``
use the same readers and checks, so all three refuse the same files with the same words.

Nothing of the file is held as Python rows: the reader's rows stream into an Arrow file, the
checked records into another, and a batched ``Dataset.map`` tokenizes them into a third (see
:mod:`app.data.prepare`). The result is cached by fingerprint (:mod:`app.data.cache`): a second run
on the same data and settings opens the prepared files and never calls the tokenizer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.core.spec import RunSpec, SpecError
from app.core.tasks import task_for as default_task
from app.data.cache import PreparedCache, fingerprint, tokenizer_identity
from app.data.chat import chat_template_for
from app.data.check import RECORDS_FILE, ROWS_FILE, detected_layout
from app.data.examples import ExampleSet
from app.data.limits import Limits
from app.data.prepare import Prepared, PrepareOptions, describe_timings, prepare_records
from app.data.readers import stream_table
from app.data.records import check_records
from app.data.sources import DatasetResolver
from app.data.store import ScratchFolder, StoredTable, write_rows

Log = Callable[[str], Any]
# Files of a build that only lead to the examples; removed before the entry is renamed into place.
_INTERMEDIATE = (ROWS_FILE, "val-rows.arrow", RECORDS_FILE, "val-records.arrow")


def prepare_for_run(
    spec: RunSpec, tokenizer: Any, resolver: DatasetResolver, log: Log, max_positions: int | None = None,
    cache_dir: Path | None = None,
) -> tuple[Prepared, str]:
    """Read, map, check and tokenize the run's data; returns the prepared examples and the task type.

    ``cache_dir`` (the studio's ``Settings.data_cache_dir``) keeps the prepared data for the next
    run with the same inputs; without it the files live in a temporary folder for as long as the
    returned splits are in use.
    """
    train_path = Path(resolver(spec.data.dataset))
    val_path = Path(resolver(spec.data.validation)) if spec.data.validation is not None else None
    max_length = spec.data.max_length
    clamp = None
    if max_positions is not None and max_length > max_positions:
        clamp = (f"data: max_length {max_length} is longer than the model's {max_positions} positions; "
                 f"using {max_positions}")
        max_length = max_positions
    limits = Limits()
    scratch = ScratchFolder() if cache_dir is None else None
    cache = PreparedCache(scratch.path if scratch is not None else cache_dir)
    started = time.perf_counter()
    inputs = {
        "data": {"train": _file_input(cache, train_path, scratch),
                 "validation": _file_input(cache, val_path, scratch) if val_path is not None else None},
        "limits": asdict(limits), "max_rows": spec.data.max_rows,
        "shape": spec.data.shape, "mapping": dict(spec.data.mapping or {}),
        "task": spec.task if spec.task_is_fixed else None,  # None: the task follows the detected shape
        "options": {"max_length": max_length, "packing": spec.data.packing, "val_fraction": spec.data.val_fraction,
                    "seed": spec.training.seed, "dedupe": spec.data.dedupe},
        "tokenizer": tokenizer_identity(tokenizer) if scratch is None else None,
        "chat_template": chat_template_for(tokenizer),
    }
    key = fingerprint(inputs)
    fingerprinting = time.perf_counter() - started
    loaded = cache.load(key)
    if loaded is not None:
        prepared, manifest = loaded
        for line in manifest["log"]:
            log(line)
        if clamp:
            log(clamp)
        log(f"data: prepared examples {key[:12]} found in the cache (made {manifest['created']}); nothing tokenized")
    else:
        def make(folder: Path) -> dict:
            return _build(folder, spec, tokenizer, train_path, val_path, limits, max_length, clamp, inputs, log)

        prepared, manifest = cache.build(key, make)
        prepared.timings = {**manifest["timings"], **prepared.timings}
        log(f"data: prepared in {describe_timings(prepared.timings)}")
    prepared.timings["fingerprint"] = fingerprinting
    if scratch is not None:  # the scratch folder goes when the last split that maps its files does
        prepared.train, prepared.eval = (ExampleSet(prepared.train.dataset, keep=scratch),
                                         ExampleSet(prepared.eval.dataset, keep=scratch))
    log(data_summary(prepared.stats, manifest["source"], len(prepared.train), len(prepared.eval)))
    if not prepared.train:
        raise SpecError("data", "no training examples left after preparation")
    return prepared, manifest["task"]


def _file_input(cache: PreparedCache, path: Path, scratch: ScratchFolder | None) -> dict[str, str | None]:
    """A data file as a fingerprint input: its content (sha256) and the name messages call it by.
    Nothing is read when there is no cache to look in."""
    return {"sha256": cache.content_digest(path) if scratch is None else None, "name": path.name}


def _build(folder: Path, spec: RunSpec, tokenizer: Any, train_path: Path, val_path: Path | None, limits: Limits,
           max_length: int, clamp: str | None, inputs: dict, log: Log) -> dict:
    """Read, check and tokenize into ``folder``; returns the cache entry's manifest."""
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def read(path: Path, name: str) -> StoredTable:
        return write_rows(stream_table(path, limits=limits), folder / name, max_rows=spec.data.max_rows)

    table = read(train_path, ROWS_FILE)
    val_table = read(val_path, "val-rows.arrow") if val_path is not None else None
    timings["read"] = time.perf_counter() - started
    # The layout rule and the checks of `datasets add` and the studio's upload (app.data.check).
    detection, shape, mapping = detected_layout(table, spec.data.shape, spec.data.mapping)
    replayed: list[str] = []  # what a cache hit logs again
    if spec.data.shape == "auto" or not spec.data.mapping:  # detection decided something: say what it saw
        replayed.append(f"data: detected shape {detection.shape} mapping {detection.mapping} "
                        f"(confidence {detection.confidence:.2f})")
        log(replayed[-1])
    started = time.perf_counter()
    records = check_records(table, shape, mapping, folder / RECORDS_FILE)
    timings["check"] = time.perf_counter() - started
    task = spec.task if spec.task_is_fixed else default_task(shape)
    if clamp:
        log(clamp)
    options = PrepareOptions(
        max_length=max_length, packing=spec.data.packing, val_fraction=spec.data.val_fraction,
        seed=spec.training.seed, dedupe=spec.data.dedupe, task=task,
    )
    started = time.perf_counter()
    val_records = (check_records(val_table, shape, mapping, folder / "val-records.arrow", need_classes=False)
                   if val_table is not None else None)
    timings["check"] += time.perf_counter() - started
    prepared = prepare_records(records, tokenizer, options, val=val_records, folder=folder)
    timings.update(prepared.timings)
    manifest = {"task": task, "shape": shape, "mapping": mapping, "source": train_path.name, "log": replayed,
                "label_names": prepared.label_names, "stats": prepared.stats, "layout": prepared.layout,
                "timings": timings, "inputs": inputs}
    for name in _INTERMEDIATE:
        (folder / name).unlink(missing_ok=True)
    return manifest


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

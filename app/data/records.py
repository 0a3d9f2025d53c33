"""Checked records in Arrow: each row of a table as the plain record of its roles, checked as it is
written, with the line it came from and a key that finds exact repeats.

The record columns have strict types for the shape (strings; a chat's ``messages`` a list of
role/content structs; a label its name as text), so the tokenizing ``map`` reads typed columns.
Repeats are found on ``key``, a 128-bit digest of the whole normalised record (label type
included), with Arrow's group-by instead of a Python set of every row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value

from app.core.tasks import CLASSIFICATION_SHAPES
from app.data.shapes import ROLES, check_classes, iter_records
from app.data.store import BatchWriter

LINE, KEY = "line", "key"


def record_key(record: dict) -> str:
    """Two examples are duplicates when their normalised records are equal."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def role_features(shape: str) -> Features:
    """The record columns of ``shape``."""
    if shape == "chat":
        return Features({"messages": List({"role": Value("string"), "content": Value("string")})})
    return Features({role: Value("string") for role in ROLES[shape]})


@dataclass
class Records:
    """One file's checked records (role columns, ``line``, ``key``) and what the check saw."""

    dataset: Dataset
    source: str
    shape: str
    mapping: dict[str, str]
    classes: set[str] | None  # label names seen, for the classification shapes

    def __len__(self) -> int:
        return self.dataset.num_rows

    @property
    def roles(self) -> list[str]:
        return list(role_features(self.shape))

    def line_of(self, index: int) -> int | None:
        return self.dataset.data.column(LINE)[index].as_py()

    def keys(self) -> pa.ChunkedArray:
        return self.dataset.data.column(KEY)

    def labels(self) -> pa.ChunkedArray:
        return self.dataset.data.column("label")


def _lines(table) -> Iterator[int | None]:
    lines = getattr(table, "iter_lines", None)
    return lines() if lines is not None else chain(table.lines, repeat(None))


def check_records(table, shape: str, mapping: dict[str, str], path: Path | None, *,
                  need_classes: bool = True) -> Records:
    """Check every row of ``table`` (a Table or a stored table) against the layout and write its
    record to ``path`` (memory when None) as it goes; the first bad row raises DataError and no
    file is left. ``need_classes``: a classification file must hold two labels or more."""
    features = role_features(shape)
    roles = list(features)
    writer = BatchWriter(path, Features({**features, LINE: Value("int64"), KEY: Value("binary")}))
    classes: set[str] | None = set() if shape in CLASSIFICATION_SHAPES else None
    try:
        for record, line in zip(iter_records(table, shape, mapping), _lines(table)):
            if classes is not None:
                classes.add(str(record["label"]))
            key = record_key(record)
            writer.add(*(str(record[r]) if r == "label" else record[r] for r in roles), line, _digest(key),
                       size=len(key))
        if need_classes and classes is not None:
            check_classes(classes, table.source, mapping)
    except BaseException:
        writer.abort()
        raise
    return Records(writer.finish(), table.source, shape, dict(mapping), classes)


def first_of_each(keys: pa.ChunkedArray, seen: pa.ChunkedArray | None = None) -> list[int]:
    """Sorted indices of the first row of each distinct key, leaving out keys in ``seen``."""
    table = pa.table({"k": keys, "i": np.arange(len(keys), dtype=np.int64)})
    if seen is not None:
        table = table.filter(pc.invert(pc.is_in(table["k"], value_set=pa.concat_arrays(seen.chunks)
                                                if seen.num_chunks else pa.array([], pa.binary()))))
    firsts = table.group_by("k", use_threads=False).aggregate([("i", "min")])["i_min"]
    return np.sort(firsts.to_numpy()).tolist()

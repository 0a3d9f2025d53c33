"""Token examples as the engine reads them: an Arrow dataset behind a plain sequence of dicts.

``len(examples)``, ``examples[i]`` (a dict of Python lists, as ``collate`` takes it), slices and
iteration all read the memory-mapped Arrow file, so a run never holds its whole data as Python
objects; ``take`` reads a batch in one query; ``dataset`` is the 🤗 dataset itself (``with_format
("torch")`` for tensors).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset

from app.data.store import ArrowRows

_ITER_BATCH = 1024


class ExampleSet(ArrowRows):
    """A read-only sequence of examples over ``dataset``; ``keep`` holds whatever must outlive it
    (a temporary folder whose files the dataset maps)."""

    def __init__(self, dataset: Dataset, keep: Any = None) -> None:
        self.dataset = dataset
        self._keep = keep

    def take(self, indices: Iterable[int]) -> list[dict]:
        """The examples at ``indices``, in that order, read in one query."""
        indices = list(indices)
        if not indices:
            return []
        columns = self.dataset[indices]
        return [dict(zip(columns, values)) for values in zip(*columns.values())]

    def __iter__(self) -> Iterator[dict]:
        for columns in self.dataset.iter(batch_size=_ITER_BATCH):
            yield from (dict(zip(columns, values)) for values in zip(*columns.values()))

    def __add__(self, other: Sequence[dict]) -> list[dict]:
        """Like adding lists (small sets, tests): every example of both, in a new list."""
        return [*self, *other]

    def lengths(self) -> list[int]:
        """Each example's token count, read from the Arrow offsets (no token is decoded)."""
        out: list[int] = []
        for batch in self.dataset.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=65536):
            out += pc.list_value_length(batch["input_ids"]).to_pylist()
        return out

    def __repr__(self) -> str:
        return f"ExampleSet({len(self):,} examples, columns {self.dataset.column_names})"

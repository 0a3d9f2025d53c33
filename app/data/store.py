"""Arrow files for the data pipeline: rows written as they stream in, read back memory-mapped.

Every stage of preparation (the rows a reader read, the checked records, the token examples) is an
Arrow IPC stream file that 🤗 ``datasets`` opens memory-mapped (``Dataset.from_file``), so a
stage hands the next one a file, never a Python list of the whole data. :class:`BatchWriter`
writes one: values go into column lists, and every ``batch_rows`` rows become a record batch on
disk, so memory holds one batch at a time. With no path it writes into memory instead (small
tables, tests); the dataset it returns is the same either way.

:func:`write_rows` keeps what a reader read. Its rows are JSON-like values whose types may differ
from row to row (a label 1 here and "1" there; JSON Lines keys that come and go), which no fixed
Arrow column type holds without failing or coercing, and the checks that follow depend on the
exact values ("the field holds a list, not text"). So each row is stored whole as one value of
the ``datasets`` ``Json`` type (JSON text in Arrow) beside its line number; the checked records and
the examples after it have strict column types.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import pyarrow as pa
from datasets import Dataset, Features, Json, Value

from app.data.readers import RowStream

BATCH_ROWS = 8192
BATCH_BYTES = 8 << 20  # a batch is written once its rows hold about this much text
ROW_FEATURES = Features({"line": Value("int64"), "row": Json()})


class ScratchFolder:
    """A temporary folder for Arrow files nobody keeps (a check, a run without a data cache), removed when
    nothing holds this any more: whatever maps its files holds it."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="tunestudio-data-"))
        weakref.finalize(self, shutil.rmtree, str(self.path), True)


class BatchWriter:
    """Rows in, an Arrow dataset out; at most ``batch_rows`` rows (or about ``batch_bytes`` of their
    text, as the caller sizes them) are held in Python at a time."""

    def __init__(self, path: Path | None, features: Features, batch_rows: int = BATCH_ROWS,
                 batch_bytes: int = BATCH_BYTES) -> None:
        self.path, self.features, self.batch_rows, self.batch_bytes = path, features, batch_rows, batch_bytes
        self.held = 0
        self.schema = features.arrow_schema
        self.names = list(features)
        self.columns: list[list[Any]] = [[] for _ in self.names]
        self.count = 0
        self._sink = pa.OSFile(str(path), "wb") if path is not None else pa.BufferOutputStream()
        self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def add(self, *values: Any, size: int = 0) -> None:
        """One row, its values in the order of ``features``; ``size`` is about how many bytes it holds."""
        for column, value in zip(self.columns, values):
            column.append(value)
        self.count += 1
        self.held += size
        if len(self.columns[0]) >= self.batch_rows or self.held >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.columns[0]:
            return
        arrays = [_array(values, field.type) for values, field in zip(self.columns, self.schema)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.columns = [[] for _ in self.names]
        self.held = 0

    def finish(self) -> Dataset:
        """Write what is left and open the result (memory-mapped when it is a file)."""
        self.flush()
        self._writer.close()
        if self.path is not None:
            self._sink.close()
            return Dataset.from_file(str(self.path))
        return Dataset.from_buffer(self._sink.getvalue())

    def abort(self) -> None:
        """Close and remove a partly written file (a row failed its check)."""
        try:
            self._writer.close()
        finally:
            if self.path is not None:
                self._sink.close()
                self.path.unlink(missing_ok=True)


def _array(values: list[Any], type_: pa.DataType) -> pa.Array:
    if isinstance(type_, pa.ExtensionType):  # Json: JSON text in the extension's string storage
        return pa.ExtensionArray.from_storage(type_, pa.array(values, type_.storage_type))
    return pa.array(values, type_)


def record_batches(dataset: Dataset, path: Path | None, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """``columns`` of a dataset that :class:`BatchWriter` wrote, batch by batch in order.

    A file is read as a stream rather than through the memory map: a pass over all of a large file
    then holds one batch, instead of adding every page of the file to the process's resident set.
    """
    if path is None:
        yield from dataset.data.table.select(list(columns)).to_batches()
        return
    with pa.OSFile(str(path), "rb") as source:
        for batch in pa.ipc.open_stream(source):
            yield batch.select(list(columns))


# --- the rows a reader read --------------------------------------------------------------------


class StoredTable:
    """What a reader read, in an Arrow file: the table-like object that detection and the record
    checks read (``columns``, ``rows``, ``source``, ``line_of``) without the rows in memory."""

    def __init__(self, dataset: Dataset, path: Path | None, source: str, fmt: str, encoding: str,
                 columns: list[str]) -> None:
        self.dataset, self.path = dataset, path
        self.source, self.fmt, self.encoding = source, fmt, encoding
        self.columns = list(columns)
        self.rows = _StoredRows(dataset, path)

    def __len__(self) -> int:
        return self.dataset.num_rows

    def line_of(self, index: int) -> int | None:
        return self.dataset.data.column("line")[index].as_py() if index < len(self) else None

    def iter_lines(self) -> Iterator[int | None]:
        """Each row's line, in order (beside ``rows``, for a pass over both)."""
        for batch in record_batches(self.dataset, self.path, ["line"]):
            yield from batch.column(0).to_pylist()


class ArrowRows(Sequence[dict]):
    """A read-only sequence of dicts over an Arrow dataset: ``len``, ``rows[i]`` (negative too), slices
    and ``take(indices)``, all answered by :meth:`take`, which reads a batch in one query. The stored rows
    and the engine's examples (:class:`app.data.examples.ExampleSet`) are two of these."""

    dataset: Dataset

    def __len__(self) -> int:
        return self.dataset.num_rows

    @overload
    def __getitem__(self, index: int) -> dict: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...

    def __getitem__(self, index: int | slice) -> dict | list[dict]:
        if isinstance(index, slice):
            return self.take(range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        return self.take([index])[0]

    def take(self, indices: Iterable[int]) -> list[dict]:
        """The rows at ``indices``, in that order."""
        raise NotImplementedError


class _StoredRows(ArrowRows):
    """The stored rows as dicts, decoded with the standard json module (exactly what was read)."""

    def __init__(self, dataset: Dataset, path: Path | None) -> None:
        self.dataset, self.path = dataset, path

    def take(self, indices: Iterable[int]) -> list[dict]:
        texts = self.dataset.data.column("row").take(pa.array(list(indices), pa.int64())).to_pylist()
        return [json.loads(text) for text in texts]

    def __iter__(self) -> Iterator[dict]:
        for batch in record_batches(self.dataset, self.path, ["row"]):
            yield from map(json.loads, batch.column(0).to_pylist())


def write_rows(stream: RowStream, path: Path | None, *, max_rows: int | None = None,
               batch_bytes: int = BATCH_BYTES) -> StoredTable:
    """Write the stream's rows to ``path`` as they are read (or into memory when ``path`` is None).

    The whole file is read and checked; only the first ``max_rows`` rows are kept when that is set
    (a run's ``data.max_rows``). A problem anywhere in the file raises DataError and leaves no file.
    """
    writer = BatchWriter(path, ROW_FEATURES, batch_bytes=batch_bytes)
    try:
        for line, row in stream:
            if max_rows is None or writer.count < max_rows:
                text = json.dumps(row)
                writer.add(line, text, size=len(text))
    except BaseException:
        writer.abort()
        raise
    return StoredTable(writer.finish(), path, stream.source, stream.fmt, stream.encoding, stream.columns)

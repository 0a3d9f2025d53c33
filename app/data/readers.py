"""Read an uploaded data file as rows: plain dicts, with the line each row came from.

Every reader streams: bytes are decoded chunk by chunk and turned into rows as they arrive.
:func:`stream_table` hands the rows on one at a time (the data pipeline writes them to Arrow as
they come, so a large file is never held as Python rows); :func:`read_table` collects them into a
:class:`Table` for small files, previews and tests. Both run the same checks and raise the same
DataError. Encoding detection is a separate cheap pass over the bytes that keeps nothing.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from app.data import encodings
from app.data.errors import DataError
from app.data.limits import Limits

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "txt", "zip")
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl",
    ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".txt": "txt", ".text": "txt",
    ".zip": "zip",
}
_SPREADSHEETS = {".xlsx", ".xls", ".ods", ".numbers"}
_SNIFF_CHARS = 64 * 1024
_CHUNK_CHARS = 1 << 20

Opener = Callable[[], BinaryIO]
TextOpener = Callable[[], io.TextIOWrapper]


@dataclass
class Table:
    """Rows as plain dicts (str/int/float/bool/list/dict/None); ``lines[i]`` is row i's first line."""

    columns: list[str]
    rows: list[dict]
    source: str
    fmt: str
    encoding: str
    lines: list[int | None] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if index < len(self.lines) else None


Rows = Iterator[tuple[int | None, dict]]


@dataclass
class RowStream:
    """A file's rows as its reader produces them: iterate once for ``(line, row)`` pairs.

    The file, its format and encoding are settled (and checked) before the first row. ``columns``
    grows while the rows come (a JSON record may bring a key no earlier record had) and is complete
    once the iteration ends; a row lacks the keys first seen after it, which read as None, exactly
    as :func:`read_table` fills them. The stream raises DataError at the first problem, and a few
    only at the end (an empty file, a header without rows).
    """

    source: str
    fmt: str
    encoding: str
    columns: list[str]
    rows: Rows = field(repr=False)

    def __iter__(self) -> Rows:
        return self.rows


def stream_table(
    path: str | Path, *, encoding: str | None = None, limits: Limits | None = None, name: str | None = None
) -> RowStream:
    """Open ``path`` for reading row by row. ``name`` is what the user called the file (an upload's
    original name): its extension picks the format and it is the file named in every message.

    Problems with the file as a whole (missing, too large, empty, an unusable zip, binary bytes) raise
    here; problems with its rows raise while iterating.
    """
    limits = limits or Limits()
    path = Path(path)
    display = name or path.name
    if not path.is_file():
        raise DataError("file_not_found", "the file does not exist or is not a regular file", file=display)
    size = path.stat().st_size
    _check_size(size, limits, display)
    if size == 0:
        raise DataError("empty_file", "the file is empty", file=display, hint="Upload a file with data rows")
    chosen = encodings.normalise(encoding) if encoding else None
    fmt = _format_of(display, lambda: path.open("rb"))
    if fmt == "zip":
        return _stream_zip(path, display, chosen, limits)
    return _stream(lambda: path.open("rb"), fmt, display, chosen, limits)


def read_table(
    path: str | Path, *, encoding: str | None = None, limits: Limits | None = None, name: str | None = None
) -> Table:
    """Read all of ``path`` into a :class:`Table` (see :func:`stream_table` for the arguments).

    Raises DataError for anything the studio cannot use; never returns a partial table.
    """
    stream = stream_table(path, encoding=encoding, limits=limits, name=name)
    rows: list[dict] = []
    lines: list[int | None] = []
    for line, row in stream:
        rows.append(row)
        lines.append(line)
    width = len(stream.columns)
    for row in rows:
        if len(row) != width:
            for key in stream.columns:
                row.setdefault(key, None)
    return Table(stream.columns, rows, stream.source, stream.fmt, stream.encoding, lines)


def is_data_file_name(name: str) -> bool:
    """Whether ``name`` ends in an extension the readers know (``reviews/train.csv`` is a file, never a 🤗 id)."""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    return suffix in _EXTENSIONS or suffix in _SPREADSHEETS


def _check_size(size: int, limits: Limits, name: str) -> None:
    if size > limits.max_bytes:
        raise DataError(
            "too_large", f"the file is {_human(size)} ({size:,} bytes), over the limit of {limits.max_bytes:,} bytes",
            file=name, hint="Upload a smaller file or raise the upload limit",
        )


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _format_of(name: str, opener: Opener) -> str:
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix in _SPREADSHEETS:
        raise DataError(
            "unsupported_format", f"spreadsheet files ({suffix}) are not read directly", file=name,
            hint="Save the sheet as CSV and upload that",
        )
    with opener() as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"PAR1"):
        return "parquet"
    return "sniff"


# --- zip ---------------------------------------------------------------------------------------


def _unsafe(member: str) -> bool:
    normal = member.replace("\\", "/")
    parts = normal.split("/")
    return normal.startswith("/") or (len(parts[0]) >= 2 and parts[0][1] == ":") or ".." in parts


def _junk(member: str) -> bool:
    parts = member.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts if p)


def _stream_zip(path: Path, display: str, encoding: str | None, limits: Limits) -> RowStream:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError("bad_zip", f"the zip archive cannot be read ({e})", file=display) from None
    try:
        member = _zip_member(archive, display, limits)
        inner = f"{display}/{member.filename}"
        fmt = _EXTENSIONS[PurePosixPath(member.filename).suffix.lower()]

        def opener() -> BinaryIO:
            return _Bounded(archive.open(member), limits.max_bytes, inner)

        with _zip_errors(inner):
            stream = _stream(opener, fmt, inner, encoding, limits, fmt_name=f"zip/{fmt}")
    except BaseException:
        archive.close()
        raise
    stream.rows = _zip_rows(stream.rows, archive, inner)
    return stream


def _zip_member(archive: zipfile.ZipFile, display: str, limits: Limits) -> zipfile.ZipInfo:
    """The one data file in the archive, after refusing unsafe paths, none, several, or an empty one."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    for m in members:
        if _unsafe(m.filename):
            raise DataError(
                "zip_unsafe_path", f"the zip entry '{m.filename}' points outside the archive's folder",
                file=display, field=m.filename, hint="Re-create the zip from the data file itself",
            )
    data = [
        m for m in members
        if not _junk(m.filename)
        and _EXTENSIONS.get(PurePosixPath(m.filename).suffix.lower()) not in (None, "zip")
    ]
    if not data:
        listed = ", ".join(m.filename for m in members[:10]) or "nothing"
        raise DataError(
            "zip_no_data", f"the zip holds no data file (it holds {listed})", file=display,
            hint="Put one CSV, TSV, JSON, JSON Lines, Parquet or TXT file in the zip",
        )
    if len(data) > 1:
        listed = ", ".join(m.filename for m in data[:10])
        raise DataError(
            "zip_multiple", f"the zip holds {len(data)} data files ({listed}); the studio needs exactly one",
            file=display, hint="Upload the files one at a time (a second file can be the validation set)",
        )
    member = data[0]
    inner = f"{display}/{member.filename}"
    _check_size(member.file_size, limits, inner)
    if member.file_size == 0:
        raise DataError("empty_file", "the file is empty", file=inner)
    return member


@contextmanager
def _zip_errors(inner: str) -> Iterator[None]:
    try:
        yield
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataError("bad_zip", f"the zip entry cannot be extracted ({e})", file=inner) from None


def _zip_rows(rows: Rows, archive: zipfile.ZipFile, inner: str) -> Rows:
    """The member's rows; the archive stays open until they are read (or the reader stops early)."""
    try:
        with _zip_errors(inner):
            yield from rows
    finally:
        archive.close()


class _Bounded(io.RawIOBase):
    """A read-only stream that refuses to yield more than ``limit`` bytes (zip bombs lie in headers)."""

    def __init__(self, raw: BinaryIO, limit: int, name: str) -> None:
        self._raw, self._limit, self._name, self._seen = raw, limit, name, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        self._seen = self._raw.seek(offset, whence)
        return self._seen

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, b) -> int:
        data = self._raw.read(len(b))
        self._seen += len(data)
        if self._seen > self._limit:
            raise DataError("too_large", f"the unpacked file is over the limit of {_human(self._limit)}", file=self._name)
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


# --- text formats ------------------------------------------------------------------------------


def _stream(
    opener: Opener, fmt: str, display: str, encoding: str | None, limits: Limits, fmt_name: str | None = None
) -> RowStream:
    columns: list[str] = []
    if fmt == "parquet":
        return RowStream(display, fmt_name or fmt, "binary", columns, _rows_parquet(opener, display, limits, columns))
    if encoding is None:
        with opener() as f:
            encoding = encodings.detect(f, display)
    if fmt == "sniff" or fmt in ("json", "jsonl"):
        fmt = _sniff_text_format(opener, encoding, display, fmt)
    reader = {"csv": _rows_csv, "tsv": _rows_csv, "json": _rows_json, "jsonl": _rows_jsonl, "txt": _rows_txt}[fmt]

    def open_text() -> io.TextIOWrapper:
        raw = opener()
        return io.TextIOWrapper(raw if isinstance(raw, io.BufferedIOBase) else io.BufferedReader(raw),
                                encoding=encoding, newline="")

    rows = _decoded(reader(open_text, display, limits, fmt, columns), opener, encoding, display)
    return RowStream(display, fmt_name or fmt, encoding, columns, rows)


def _decoded(rows: Rows, opener: Opener, encoding: str, display: str) -> Rows:
    """``rows``, with bytes that do not decode reported as ``bad_encoding`` at their first line."""
    try:
        yield from rows
    except UnicodeDecodeError as e:
        raise DataError(
            "bad_encoding", f"the bytes are not valid {encoding} ({e.reason})", file=display,
            line=_first_bad_line(opener, encoding),
            hint="Choose the file's encoding (for example latin-1 or utf-16) and try again",
        ) from None


def _first_bad_line(opener: Opener, encoding: str) -> int | None:
    if not encoding.startswith("utf-8"):
        return None
    with opener() as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _sample(opener: Opener, encoding: str, display: str) -> str:
    with opener() as raw:
        text = io.TextIOWrapper(raw if isinstance(raw, io.BufferedIOBase) else io.BufferedReader(raw),
                                encoding=encoding, errors="replace", newline="")
        return text.read(_SNIFF_CHARS)


def _sniff_text_format(opener: Opener, encoding: str, display: str, fmt: str) -> str:
    sample = _sample(opener, encoding, display)
    stripped = sample.lstrip()
    if not stripped:
        raise DataError("empty_file", "the file holds only whitespace", file=display)
    if stripped[0] == "[":
        return "json"
    if stripped[0] == "{":
        first, _, rest = stripped.partition("\n")
        try:
            json.loads(first)
            complete = True
        except json.JSONDecodeError:
            complete = False
        if complete and rest.strip():
            return "jsonl"
        return "jsonl" if fmt == "jsonl" else "json"
    if fmt in ("json", "jsonl"):
        return fmt
    try:
        csv.Sniffer().sniff(sample[:8192], delimiters=",\t;|")
        header = sample.splitlines()[0] if sample.splitlines() else ""
        return "csv" if any(d in header for d in ",\t;|") else "txt"
    except csv.Error:
        return "txt"


def _lines(text: io.TextIOBase, display: str, limits: Limits) -> Iterator[tuple[int, str]]:
    """Physical lines with their numbers; a line over the limit is refused before it is kept whole."""
    number = 0
    while True:
        try:
            line = text.readline(limits.max_line_chars + 2)
        except UnicodeDecodeError as e:
            raise DataError(
                "bad_encoding", f"the bytes are not valid {text.encoding} ({e.reason})", file=display,
                line=number + 1, hint="Choose the file's encoding (for example latin-1 or utf-16) and try again",
            ) from None
        if not line:
            return
        number += 1
        body = line.rstrip("\r\n")
        if len(body) > limits.max_line_chars:
            raise DataError(
                "line_too_long", f"the line is longer than {limits.max_line_chars:,} characters",
                file=display, line=number, hint="Split the text over several rows or raise the line limit",
            )
        if len(line) > limits.max_line_chars and not line.endswith("\n"):
            # readline stopped at the size bound inside the line: keep reading to confirm it is too long
            more = text.readline(2)
            if more and more not in ("\n", "\r\n", "\r"):
                raise DataError(
                    "line_too_long", f"the line is longer than {limits.max_line_chars:,} characters",
                    file=display, line=number, hint="Split the text over several rows or raise the line limit",
                )
            line += more
        yield number, line


def _too_many(display: str, limits: Limits, line: int | None = None) -> DataError:
    return DataError(
        "too_many_rows", f"the file has more than {limits.max_rows:,} rows", file=display, line=line,
        hint="Upload a sample of the data or raise the row limit",
    )


def _delimiter(sample: str, fmt: str) -> tuple[str, str]:
    header = next((line for line in sample.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in ",\t;|"}
    if fmt == "tsv" and counts["\t"]:
        return "\t", '"'
    try:
        dialect = csv.Sniffer().sniff(sample[:_SNIFF_CHARS], delimiters=",\t;|")
        if counts.get(dialect.delimiter):
            quote = "'" if dialect.quotechar == "'" and '"' not in sample else '"'
            return dialect.delimiter, quote
    except csv.Error:
        pass
    best = max(counts, key=lambda d: counts[d])
    return (best if counts[best] else ("\t" if fmt == "tsv" else ",")), '"'


def _too_many_columns(display: str, limits: Limits, count: int, line: int | None = None) -> DataError:
    return DataError(
        "too_many_columns", f"the file has {count:,} columns, more than the {limits.max_columns:,} allowed",
        file=display, line=line, hint="Keep only the columns the training needs (text, label, prompt, response …)",
    )


def _header_names(raw: list[str], display: str, limits: Limits, line: int | None) -> list[str]:
    """Blank cells get ``column_<i>``, repeats ``<name>_2``, ``<name>_3`` … in one pass (linear in cells)."""
    if len(raw) > limits.max_columns:
        raise _too_many_columns(display, limits, len(raw), line)
    names: list[str] = []
    seen: set[str] = set()
    next_suffix: dict[str, int] = {}
    for i, cell in enumerate(raw, 1):
        base = cell.strip() or f"column_{i}"
        name, k = base, next_suffix.get(base, 2)
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        next_suffix[base] = k
        seen.add(name)
        names.append(name)
    return names


def _rows_csv(open_text: TextOpener, display: str, limits: Limits, fmt: str, columns: list[str]) -> Rows:
    with open_text() as text:
        sample = text.read(_SNIFF_CHARS)
        if not sample.strip():
            raise DataError("empty_file", "the file holds only whitespace", file=display)
        delimiter, quote = _delimiter(sample, fmt)
        text.seek(0)
        numbered = _lines(text, display, limits)
        state = {"line": 0}

        def feed() -> Iterator[str]:
            for number, line in numbered:
                state["line"] = number
                yield line

        if csv.field_size_limit() < limits.max_line_chars * 4:
            csv.field_size_limit(min(sys.maxsize, limits.max_bytes))
        reader = csv.reader(feed(), delimiter=delimiter, quotechar=quote, strict=True)
        header = False
        count = 0
        while True:
            start = state["line"] + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataError(
                    "malformed_csv", f"the row cannot be parsed ({e})", file=display, line=state["line"] or start,
                    hint="Check the quotes on this line: a field with a delimiter or line break must be quoted",
                ) from None
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if not header:
                columns.extend(_header_names(record, display, limits, start))
                header = True
                continue
            if len(record) != len(columns):
                raise DataError(
                    "inconsistent_columns",
                    f"the row has {len(record)} fields but the header has {len(columns)}",
                    file=display, line=start, row=count + 1,
                    hint=f"Every row needs one value per column ({', '.join(columns[:8])}); "
                         "quote fields that hold the delimiter",
                )
            if count >= limits.max_rows:
                raise _too_many(display, limits, start)
            count += 1
            yield start, dict(zip(columns, record))
    if not header:
        raise DataError("empty_file", "the file holds no header and no rows", file=display)
    if not count:
        raise DataError(
            "header_only", f"the file has a header ({', '.join(columns[:8])}) but no data rows", file=display,
            hint="Add rows below the header",
        )


def _record_or_fail(value, display: str, line: int | None, code: str = "not_records") -> dict:
    if not isinstance(value, dict):
        kind = type(value).__name__ if value is not None else "null"
        raise DataError(
            code, f"each record must be a JSON object with named fields, found a {kind}", file=display, line=line,
            hint='Write one object per record, such as {"text": "...", "label": "..."}',
        )
    return value


class _Keys:
    """The union of the records' keys, in order of first appearance, bounded by ``max_columns``."""

    def __init__(self, columns: list[str], display: str, limits: Limits) -> None:
        self.columns, self.display, self.limits = columns, display, limits
        self.seen: set[str] = set(columns)

    def add(self, record: dict, line: int | None) -> dict:
        if len(record) > len(self.seen) or any(key not in self.seen for key in record):
            for key in record:
                name = str(key)
                if name not in self.seen:
                    self.seen.add(name)
                    self.columns.append(name)
            if len(self.columns) > self.limits.max_columns:
                raise _too_many_columns(self.display, self.limits, len(self.columns), line)
        return record


def _rows_jsonl(open_text: TextOpener, display: str, limits: Limits, fmt: str, columns: list[str]) -> Rows:
    keys = _Keys(columns, display, limits)
    count = 0
    with open_text() as text:
        for number, line in _lines(text, display, limits):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise DataError(
                    "malformed_jsonl", f"the line is not valid JSON ({e.msg})", file=display, line=number,
                    column=e.colno, hint="Each line must hold one complete JSON object",
                ) from None
            if count >= limits.max_rows:
                raise _too_many(display, limits, number)
            count += 1
            yield number, keys.add(_record_or_fail(value, display, number), number)
    if not count:
        raise DataError("empty_file", "the file holds no JSON records", file=display)


def _position(consumed_lines: int, buf: str, pos: int) -> tuple[int, int]:
    line = consumed_lines + buf.count("\n", 0, pos) + 1
    column = pos - (buf.rfind("\n", 0, pos) + 1) + 1
    return line, column


class _JsonCursor:
    """A window over the text that grows on demand and drops what has been parsed."""

    def __init__(self, text: io.TextIOBase, first: str) -> None:
        self.text, self.buf, self.pos, self.eof = text, first, 0, False
        self.consumed = 0  # newlines in the text already dropped from buf
        self.want = _CHUNK_CHARS

    def more(self) -> None:
        chunk = self.text.read(self.want)
        self.want *= 2
        self.eof = not chunk
        self.buf += chunk

    def skip_space(self) -> None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or self.eof:
                return
            self.more()

    def where(self, at: int | None = None) -> tuple[int, int]:
        return _position(self.consumed, self.buf, self.pos if at is None else at)

    def drop_parsed(self) -> None:
        if self.pos > _CHUNK_CHARS:
            self.consumed += self.buf.count("\n", 0, self.pos)
            self.buf, self.pos, self.want = self.buf[self.pos:], 0, _CHUNK_CHARS


def _rows_json(open_text: TextOpener, display: str, limits: Limits, fmt: str, columns: list[str]) -> Rows:
    with open_text() as text:
        first = text.read(_CHUNK_CHARS)
        if not first.strip():
            raise DataError("empty_file", "the file holds only whitespace", file=display)
        if first.lstrip()[0] != "[":
            yield from _rows_json_object(first + text.read(), display, limits, columns)
            return
        yield from _rows_json_array(text, first, display, limits, columns)


def _rows_json_array(text: io.TextIOBase, first: str, display: str, limits: Limits, columns: list[str]) -> Rows:
    cur = _JsonCursor(text, first)
    decoder = json.JSONDecoder()
    keys = _Keys(columns, display, limits)

    def fail(msg: str, at: int | None = None) -> DataError:
        line, column = cur.where(at)
        return DataError("malformed_json", msg, file=display, line=line, column=column,
                         hint="Fix the JSON at this place (a missing comma, quote or bracket is typical)")

    cur.skip_space()
    cur.pos += 1  # the '['
    cur.skip_space()
    count = 0
    if cur.pos < len(cur.buf) and cur.buf[cur.pos] == "]":
        raise DataError("empty_file", "the JSON array is empty", file=display)
    while True:
        if cur.pos >= len(cur.buf):
            raise fail("the file ends inside the JSON array (no closing ']')")
        while True:
            try:
                value, end = decoder.raw_decode(cur.buf, cur.pos)
                break
            except json.JSONDecodeError as e:
                if cur.eof:
                    raise fail(f"the JSON is not valid ({e.msg})", e.pos) from None
                cur.more()
        line, _ = cur.where()
        if count >= limits.max_rows:
            raise _too_many(display, limits, line)
        count += 1
        yield line, keys.add(_record_or_fail(value, display, line), line)
        cur.pos = end
        cur.drop_parsed()
        cur.skip_space()
        if cur.pos >= len(cur.buf):
            raise fail("the file ends inside the JSON array (no closing ']')")
        if cur.buf[cur.pos] == "]":
            if (cur.buf[cur.pos + 1:] + text.read()).strip():
                raise fail("there is more text after the closing ']'", cur.pos + 1)
            break
        if cur.buf[cur.pos] != ",":
            raise fail(f"expected ',' or ']' after a record, found '{cur.buf[cur.pos]}'")
        cur.pos += 1
        cur.skip_space()


def _rows_json_object(whole: str, display: str, limits: Limits, columns: list[str]) -> Rows:
    """An object of equal-length arrays (columns), or an object whose one list holds the records.

    Parsed in one piece: a JSON object is not a record stream by nature (see docs/data.md)."""
    try:
        value = json.loads(whole)
    except json.JSONDecodeError as e:
        raise DataError("malformed_json", f"the JSON is not valid ({e.msg})", file=display, line=e.lineno,
                        column=e.colno) from None
    del whole
    if not isinstance(value, dict) or not value:
        raise DataError("not_records", "the JSON must be an array of records or an object of columns", file=display)
    lists = {k: v for k, v in value.items() if isinstance(v, list)}
    if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))) and next(iter(lists.values())):
        records = next(iter(lists.values()))
        if len(records) > limits.max_rows:
            raise _too_many(display, limits)
        keys = _Keys(columns, display, limits)
        for record in records:
            keys.add(record, None)
        for record in records:
            yield None, record
        return
    if len(lists) != len(value):
        scalar = next(k for k in value if k not in lists)
        raise DataError(
            "not_records", "a JSON object must map each column name to a list of values",
            file=display, field=scalar, hint="Write an array of records, or one list per column",
        )
    if len(lists) > limits.max_columns:
        raise _too_many_columns(display, limits, len(lists))
    lengths = {k: len(v) for k, v in lists.items()}
    first = next(iter(lengths))
    for key, n in lengths.items():
        if n != lengths[first]:
            raise DataError(
                "inconsistent_columns", f"column '{key}' has {n} values but '{first}' has {lengths[first]}",
                file=display, field=key, hint="Every column list must have the same length",
            )
    n = lengths[first]
    if n == 0:
        raise DataError("header_only", "the columns have no values", file=display)
    if n > limits.max_rows:
        raise _too_many(display, limits)
    columns.extend(lists)
    for i in range(n):
        yield None, {c: lists[c][i] for c in columns}


def _rows_txt(open_text: TextOpener, display: str, limits: Limits, fmt: str, columns: list[str]) -> Rows:
    """One example per line, or per paragraph when blank lines separate the examples.

    Which of the two is known only once a blank line follows text, so a first cheap pass over the
    lines decides and a second one yields the rows (the text is never held whole)."""
    with open_text() as text:
        started = blank_separated = False
        for _, line in _lines(text, display, limits):
            if line.strip():
                started = True
            elif started:
                blank_separated = True
                break
    if not started:
        raise DataError("empty_file", "the file holds only blank lines", file=display)
    columns.append("text")
    with open_text() as text:
        if blank_separated:
            yield from _paragraphs(text, display, limits)
        else:
            count = 0
            for number, line in _lines(text, display, limits):
                body = line.rstrip("\r\n")
                if not body.strip():
                    continue
                count += 1
                if count > limits.max_rows:
                    raise _too_many(display, limits)
                yield number, {"text": body}


def _paragraphs(text: io.TextIOBase, display: str, limits: Limits) -> Rows:
    current: list[str] = []
    start = 0
    count = 0
    for number, line in _lines(text, display, limits):
        body = line.rstrip("\r\n")
        if body.strip():
            if not current:
                start = number
            current.append(body)
        elif current:
            count += 1
            if count > limits.max_rows:
                raise _too_many(display, limits, number)
            yield start, {"text": "\n".join(current)}
            current = []
    if current:
        if count + 1 > limits.max_rows:
            raise _too_many(display, limits)
        yield start, {"text": "\n".join(current)}


# --- parquet -----------------------------------------------------------------------------------


def _plain(value):
    """Arrow gives dates, decimals and bytes; rows carry only JSON-like values."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _rows_parquet(opener: Opener, display: str, limits: Limits, columns: list[str]) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    with opener() as f:
        try:
            pf = pq.ParquetFile(f)
            if pf.metadata.num_rows > limits.max_rows:
                raise _too_many(display, limits)
            names = [str(n) for n in pf.schema_arrow.names]
            if len(names) > limits.max_columns:
                raise _too_many_columns(display, limits, len(names))
            columns.extend(names)
            if not columns:
                raise DataError("empty_file", "the Parquet file has no columns", file=display)
            batches = pf.iter_batches(batch_size=4096)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                for record in batch.to_pylist():
                    count += 1
                    yield None, {str(k): _plain(v) for k, v in record.items()}
        except DataError:
            raise
        except (pa.ArrowException, OSError, ValueError, TypeError) as e:
            raise DataError("bad_parquet", f"the Parquet file cannot be read ({e})", file=display,
                            hint="Re-export the file as Parquet, CSV or JSON Lines") from None
    if not count:
        raise DataError("header_only", f"the Parquet file has columns ({', '.join(columns[:8])}) but no rows",
                        file=display)

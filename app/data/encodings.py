"""Which text encoding a file is in: BOMs first, then a streaming UTF-8 check, Latin-1 as the fallback."""

from __future__ import annotations

import codecs
from typing import BinaryIO

from app.data.errors import DataError

CHUNK = 1 << 20
SUPPORTED = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "latin-1")
_ALIASES = {
    "utf8": "utf-8", "utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "utf8-sig": "utf-8-sig",
    "utf-16": "utf-16", "utf16": "utf-16", "utf-16-le": "utf-16-le", "utf-16le": "utf-16-le",
    "utf-16-be": "utf-16-be", "utf-16be": "utf-16-be", "latin-1": "latin-1", "latin1": "latin-1",
    "iso-8859-1": "latin-1", "iso8859-1": "latin-1",
}
# Control characters that never occur in text files (tab, newlines and form feed are allowed).
_BINARY_CONTROLS = set(range(0, 9)) | {11} | set(range(14, 32))


def normalise(encoding: str) -> str:
    key = encoding.strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise DataError(
            "bad_encoding", f"encoding '{encoding}' is not supported",
            hint=f"Choose one of: {', '.join(SUPPORTED)}",
        )
    return _ALIASES[key]


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 text without a BOM shows NUL bytes at every other position for ASCII-range text."""
    sample = head[: 4096 - (len(head[:4096]) % 2)]
    if len(sample) < 4:
        return None
    even_nuls = sample[0::2].count(0) / (len(sample) / 2)
    odd_nuls = sample[1::2].count(0) / (len(sample) / 2)
    if odd_nuls > 0.3 and even_nuls < 0.05:
        return "utf-16-le"
    if even_nuls > 0.3 and odd_nuls < 0.05:
        return "utf-16-be"
    return None


def looks_binary(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head[:8192] if b in _BINARY_CONTROLS)
    return controls / min(len(head), 8192) > 0.01


def detect(stream: BinaryIO, name: str) -> str:
    """Read the whole stream once in chunks (nothing kept) and name its encoding.

    Raises ``binary_file`` for NUL bytes or many control characters outside UTF-16.
    """
    head = stream.read(CHUNK)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    guess = _utf16_without_bom(head)
    if guess:
        return guess
    if looks_binary(head):
        raise DataError(
            "binary_file", "the file is binary (it holds NUL or control bytes), not text",
            file=name, hint="Upload CSV, TSV, JSON, JSON Lines, Parquet, TXT or a zip of one of these",
        )
    decoder = codecs.getincrementaldecoder("utf-8")()
    chunk = head
    while chunk:
        try:
            decoder.decode(chunk, final=False)
        except UnicodeDecodeError:
            return "latin-1"
        if b"\x00" in chunk:
            raise DataError("binary_file", "the file holds NUL bytes, so it is binary, not text", file=name)
        chunk = stream.read(CHUNK)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"

"""Upper bounds on what a reader accepts, so one upload cannot exhaust the machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Checked while reading, before anything is kept.

    ``max_line_chars`` applies to line-oriented formats (CSV/TSV, JSON Lines, TXT); a JSON document
    or a Parquet file is bounded by ``max_bytes`` and ``max_rows`` only.
    """

    max_bytes: int = 1 << 30
    max_rows: int = 1_000_000
    max_line_chars: int = 1_000_000
    # No training layout uses more than a handful of columns; thousands mean a broken or hostile file.
    max_columns: int = 1_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_rows", "max_line_chars", "max_columns"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {getattr(self, name)!r}")

"""The one check a data file passes before the studio keeps it.

``tunestudio datasets add`` and the studio's data step (upload, Next, and the preview after a
mapping change) call this module and nothing else to decide whether a file is usable, so both
refuse the same files with the same message. The check reads the whole file (the readers stream
it, with the size, row, line and column limits), detects its shape and validates every row
against the chosen layout, classes included: a file that passes here is one ``prepare`` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.data.limits import Limits
from app.data.readers import Table, read_table
from app.data.shapes import Detection, detect_shape, validate_mapping

AUTO = "auto"


@dataclass(frozen=True)
class CheckedData:
    """A file that passed: its rows, what detection saw, and the layout every row was checked against."""

    table: Table
    detection: Detection
    shape: str
    mapping: dict[str, str]


def chosen_layout(detection: Detection, shape: str | None = None,
                  mapping: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The (shape, mapping) a file is checked against: the person's where given, else detection's.

    A shape chosen without a mapping takes the detected mapping only when detection found that same
    shape (another shape's roles would not fit).
    """
    detected = str(detection.shape)
    chosen = shape if shape and shape != AUTO else detected
    if mapping:
        return chosen, dict(mapping)
    return chosen, dict(detection.mapping) if chosen == detected else {}


def check_table(table: Table, shape: str | None = None, mapping: dict[str, str] | None = None) -> CheckedData:
    """Detect ``table``'s shape and validate every row against the chosen layout (DataError if any fails)."""
    detection = detect_shape(table)
    chosen, chosen_mapping = chosen_layout(detection, shape, mapping)
    validate_mapping(table, chosen, chosen_mapping)
    return CheckedData(table, detection, chosen, chosen_mapping)


def check_data_file(
    path: str | Path, limits: Limits, shape: str | None = None, mapping: dict[str, str] | None = None, *,
    name: str | None = None, encoding: str | None = None,
) -> CheckedData:
    """Read ``path`` under ``limits`` and check all of it; raises DataError naming the file as ``name``.

    ``name`` is what the person called the file (an upload's original name): it picks the format
    and is the file named in every message.
    """
    table = read_table(path, encoding=encoding, limits=limits, name=name)
    return check_table(table, shape, mapping)

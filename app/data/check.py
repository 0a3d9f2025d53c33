"""The one check a data file passes before the studio keeps it, and the layout rule a run's data follows.

``tunestudio datasets add`` and the studio's data step (upload, Next, and the preview after a
mapping change) call this module to decide whether a file is usable, and the engine's data stage
(:func:`app.data.pipeline.prepare_for_run`) reads and checks a run's file with the same two stages,
so all of them refuse the same files with the same message. The file is read once, streamed by the
readers (with the size, row, line and column limits) into an Arrow file of rows
(:func:`app.data.store.write_rows`); detection reads its first rows, and the checks stream the rows
back against the chosen layout, classes included, writing each checked record to Arrow as they go
(:func:`app.data.records.check_records`). No Python list of the file's rows is ever held, and a file
that passes here is one preparation accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.data.limits import Limits
from app.data.readers import Table, stream_table
from app.data.records import Records, check_records
from app.data.shapes import Detection, detect_shape, validate_mapping
from app.data.store import ScratchFolder, StoredTable, write_rows

AUTO = "auto"
ROWS_FILE, RECORDS_FILE = "rows.arrow", "records.arrow"


@dataclass(frozen=True)
class CheckedData:
    """A file that passed: what was read, what detection saw, the layout every row was checked against
    and, from a file, the checked records. ``keep`` holds the temporary folder their files live in."""

    table: Table | StoredTable
    detection: Detection
    shape: str
    mapping: dict[str, str]
    records: Records | None = None
    keep: Any = field(default=None, repr=False, compare=False)


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


def detected_layout(table: Table | StoredTable, shape: str | None = None, mapping: dict[str, str] | None = None,
                    ) -> tuple[Detection, str, dict[str, str]]:
    """What detection sees in ``table`` (its first rows) and the layout to check it against
    (:func:`chosen_layout`)."""
    detection = detect_shape(table)
    return (detection, *chosen_layout(detection, shape, mapping))


def check_table(table: Table, shape: str | None = None, mapping: dict[str, str] | None = None) -> CheckedData:
    """Detect an in-memory ``table``'s shape and validate every row against the chosen layout (DataError if
    any fails): the preview's check of the layout on screen."""
    detection, chosen, chosen_mapping = detected_layout(table, shape, mapping)
    validate_mapping(table, chosen, chosen_mapping)
    return CheckedData(table, detection, chosen, chosen_mapping)


def check_data_file(
    path: str | Path, limits: Limits, shape: str | None = None, mapping: dict[str, str] | None = None, *,
    name: str | None = None, encoding: str | None = None, folder: Path | None = None,
) -> CheckedData:
    """Read ``path`` under ``limits`` and check all of it; raises DataError naming the file as ``name``.

    ``name`` is what the person called the file (an upload's original name): it picks the format
    and is the file named in every message. The rows and records are written to ``folder`` (a
    temporary folder that lives as long as the result when None).
    """
    scratch = ScratchFolder() if folder is None else None
    where = scratch.path if scratch is not None else Path(folder)
    table = write_rows(stream_table(path, encoding=encoding, limits=limits, name=name), where / ROWS_FILE)
    detection, chosen, chosen_mapping = detected_layout(table, shape, mapping)
    records = check_records(table, chosen, chosen_mapping, where / RECORDS_FILE)
    return CheckedData(table, detection, chosen, chosen_mapping, records, scratch)

"""Where a run's data comes from: a dataset reference (see :mod:`app.core.refs`) to the file to read.

The engine, the CLI and the studio resolve references here and nowhere else. Bundled demos are
written (atomically) into the studio's bundled folder when a run reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.core.refs import bundled_name_of, dataset_id_of
from app.data.bundled import bundled_datasets
from app.data.errors import DataError

DatasetResolver = Callable[[str | int], Path]


def check_bundled_name(name: str, field: str = "data.dataset") -> None:
    """Refuse a ``bundled:<name>`` that names no bundled demo, naming the ones there are (the studio
    checks this before it queues a run, the engine again before it reads)."""
    known = bundled_datasets()
    if name not in known:
        raise DataError("no_source", f"no bundled dataset named {name!r}", field=field,
                        hint=f"Bundled datasets: {', '.join(sorted(known))}")


def bundled_file(name: str, folder: Path, field: str = "data.dataset") -> Path:
    """The data file of the bundled demo ``name``, written into ``folder`` the first time."""
    check_bundled_name(name, field)
    return bundled_datasets()[name](Path(folder))


def resolve_dataset_file(
    ref: str | int, registered: Callable[[int], Path] | None = None, bundled_dir: Path | None = None,
    field: str = "data.dataset",
) -> Path:
    """A registered dataset id, ``bundled:<name>``, or a file path -> the file to read."""
    dataset_id = dataset_id_of(ref)
    if dataset_id is not None:
        if registered is None:
            raise DataError("no_source", f"dataset:{dataset_id} is a registered dataset, but no registry was given "
                            "to look it up", field=field)
        return registered(dataset_id)
    name = bundled_name_of(ref)
    if name is not None:
        if bundled_dir is None:
            raise DataError("no_source", f"bundled:{name} needs the studio's bundled-data folder", field=field)
        return bundled_file(name, bundled_dir, field)
    path = Path(str(ref)).expanduser()
    if not path.is_file():
        raise DataError("no_source", f"no such file {str(ref)!r}", field=field)
    return path

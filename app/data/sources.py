"""Where a run's data comes from: a dataset reference (see :mod:`app.core.refs`) to the file to read.

The engine, the CLI and the studio resolve references here and nowhere else. Bundled demos are
written (atomically) into the studio's bundled folder when a run reads them; a dataset from the
local 🤗 datasets cache (:mod:`app.data.hub`, offline) is written once as Parquet into the studio's
hub-data folder, so every reader, check and message works on it as on an upload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.core.refs import HubDatasetRef, bundled_name_of, dataset_id_of, hub_dataset_of, registered_ref
from app.data.bundled import bundled_datasets
from app.data.errors import DataError
from app.data.readers import is_data_file_name

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


def hub_reference(ref: str | int, base_dir: Path | None = None) -> HubDatasetRef | None:
    """The 🤗 dataset ``ref`` names, or None when it is a file: like a hub model id, an existing path
    (relative to ``base_dir``, else the working folder) wins, and a name ending in a data-file
    extension (``reviews/train.csv``) is always a file."""
    hub = hub_dataset_of(ref)
    if hub is None or is_data_file_name(hub.repo_id):
        return None
    path = Path(str(ref).strip()).expanduser()
    if (path if path.is_absolute() else (base_dir or Path.cwd()) / path).exists():
        return None
    return hub


def check_hub_dataset(hub: HubDatasetRef, field: str = "data.dataset", cache_dir: Path | None = None) -> None:
    """Refuse a 🤗 dataset that is not in the local cache (or lacks the split), naming it; reads no rows."""
    from app.data.hub import cached_split

    cached_split(hub, cache_dir, field)


def resolve_dataset_file(
    ref: str | int, registered: Callable[[int], Path] | None = None, bundled_dir: Path | None = None,
    field: str = "data.dataset", hub_dir: Path | None = None, hub_cache: Path | None = None,
) -> Path:
    """A registered dataset id, ``bundled:<name>``, a cached 🤗 dataset id or a file path -> the file to read.

    ``hub_dir`` is where a 🤗 dataset's split is written as Parquet; ``hub_cache`` the 🤗 datasets
    cache to read (default: the one ``datasets`` uses in this process).
    """
    dataset_id = dataset_id_of(ref)
    if dataset_id is not None:
        if registered is None:
            raise DataError("no_source", f"{registered_ref(dataset_id)} is a registered dataset, but no registry was given "
                            "to look it up", field=field)
        return registered(dataset_id)
    name = bundled_name_of(ref)
    if name is not None:
        if bundled_dir is None:
            raise DataError("no_source", f"bundled:{name} needs the studio's bundled-data folder", field=field)
        return bundled_file(name, bundled_dir, field)
    hub = hub_reference(ref)
    if hub is not None:
        from app.data.hub import export_split

        if hub_dir is None:
            raise DataError("no_source", f"the 🤗 dataset {hub} needs the studio's hub-data folder", field=field)
        return export_split(hub, hub_dir, hub_cache, field=field)
    path = Path(str(ref)).expanduser()
    if not path.is_file():
        raise DataError("no_source", f"no such file {str(ref)!r}", field=field)
    return path

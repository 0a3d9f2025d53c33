"""Datasets: uploads are checked, copied into the artifacts store (content-addressed) and registered.

Checking and storing are the data package's job (``app.data.check``, ``app.data.storage``); this
module decides what the registry remembers about a file (sha256, format, rows, columns, shape).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import UserError
from app.core.refs import dataset_id_of
from app.registry.ids import issue_id
from app.registry.models import ACTIVE_STATUSES, Dataset, Run
from app.services.context import Context


class DatasetNotFound(UserError, LookupError):
    pass


class DatasetInUse(UserError, RuntimeError):
    """A queued or running run still reads the dataset: deleting it would fail that run."""


@dataclass(frozen=True)
class DatasetView:
    id: int
    name: str
    path: str
    sha256: str
    format: str
    rows: int
    columns: list[str]
    bytes: int
    shape: str | None
    created_at: datetime


@dataclass(frozen=True)
class RunUse:
    """A run that reads a dataset (as training or validation data)."""

    run_id: int
    status: str


@dataclass(frozen=True)
class DatasetUsage:
    """A registered dataset with what it costs and who reads it (the studio's Datasets tab)."""

    dataset: DatasetView
    disk_bytes: int  # the stored file's size now; 0 when the file is gone
    runs: list[RunUse]  # every run whose spec reads it, newest first

    @property
    def in_use(self) -> bool:
        """A queued or running run reads it: :func:`delete_dataset` refuses."""
        return any(r.status in ACTIVE_STATUSES for r in self.runs)


def add_dataset(ctx: Context, path: str | Path, name: str | None = None, shape: str | None = None,
                mapping: dict[str, str] | None = None) -> DatasetView:
    """Check ``path`` whole (:func:`app.data.check.check_data_file`), store a copy and register it.

    A refused file raises its DataError before anything is written: no row, no stored file. ``shape``
    and ``mapping`` override detection (the CLI's ``--shape``/``--map``). The same bytes added twice
    give the existing row.
    """
    from app.data import Limits, check_data_file, file_sha256, store_upload

    source = Path(path)
    display = name or source.name
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    limit = ctx.settings.max_upload_bytes
    checked = check_data_file(source, Limits(max_bytes=limit), shape, mapping, name=display)
    digest = file_sha256(source)
    with ctx.session() as s:
        existing = _stored_copy(s, digest)
        if existing is not None:
            return _view(existing)
    stored = store_upload(source, ctx.settings.uploads_dir, sha256=digest, name=display, max_bytes=limit)
    table = checked.table
    with ctx.session() as s:
        new_id = issue_id(s, Dataset)  # holds the counter until commit: a concurrent add of the same bytes
        existing = _stored_copy(s, digest)  # waited for this one's and finds it here
        if existing is not None:
            view = _view(existing)
            s.rollback()
            return view
        row = Dataset(
            id=new_id, name=display, path=str(stored), sha256=digest, format=str(table.fmt),
            rows=len(table.rows), columns=list(table.columns), bytes=stored.stat().st_size, shape=checked.shape,
        )
        s.add(row)
        s.commit()
        return _view(row)


def _stored_copy(session, digest: str) -> Dataset | None:
    existing = session.scalar(select(Dataset).where(Dataset.sha256 == digest).order_by(Dataset.id))
    return existing if existing is not None and Path(existing.path).is_file() else None


def list_datasets(ctx: Context) -> list[DatasetView]:
    with ctx.session() as s:
        return [_view(d) for d in s.scalars(select(Dataset).order_by(Dataset.id.desc()))]


def get_dataset(ctx: Context, dataset_id: int) -> DatasetView:
    with ctx.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise DatasetNotFound(f"no dataset with id {dataset_id}")
        return _view(row)


def datasets_read_by(spec: dict) -> set[int]:
    """The registered datasets a run's spec reads (its training and validation data)."""
    data = spec.get("data") or {}
    ids = (dataset_id_of(ref) for ref in (data.get("dataset"), data.get("validation")) if isinstance(ref, str))
    return {i for i in ids if i is not None}


def runs_using(session: Session, dataset_id: int, statuses: tuple[str, ...] = ACTIVE_STATUSES) -> list[Run]:
    """Runs whose spec reads the dataset (as training or validation data), in the given statuses."""

    runs = session.scalars(select(Run).where(Run.status.in_(statuses)).order_by(Run.id))
    return [r for r in runs if dataset_id in datasets_read_by(r.spec)]


def dataset_usage(ctx: Context) -> list[DatasetUsage]:
    """Every registered dataset, newest first, with its stored file's size and the runs that read it."""
    with ctx.session() as s:
        readers: dict[int, list[RunUse]] = {}
        for run in s.scalars(select(Run).order_by(Run.id.desc())):
            for dataset_id in datasets_read_by(run.spec or {}):
                readers.setdefault(dataset_id, []).append(RunUse(run.id, run.status))
        views = [_view(d) for d in s.scalars(select(Dataset).order_by(Dataset.id.desc()))]
    return [DatasetUsage(v, _size(Path(v.path)), readers.get(v.id, [])) for v in views]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def delete_dataset(ctx: Context, dataset_id: int) -> None:
    with ctx.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise DatasetNotFound(f"no dataset with id {dataset_id}")
        users = runs_using(s, dataset_id)
        if users:
            named = ", ".join(f"run {r.id} ({r.status})" for r in users)
            raise DatasetInUse(f"dataset {dataset_id} is used by {named}: cancel it or let it finish first")
        path, digest = Path(row.path), row.sha256
        s.delete(row)
        s.commit()
        still_used = s.scalar(select(Dataset.id).where(Dataset.sha256 == digest)) is not None
    if not still_used and path.parent.parent == ctx.settings.uploads_dir:
        shutil.rmtree(path.parent, ignore_errors=True)


def _view(d: Dataset) -> DatasetView:
    return DatasetView(d.id, d.name, d.path, d.sha256, d.format, d.rows, list(d.columns), d.bytes, d.shape, d.created_at)

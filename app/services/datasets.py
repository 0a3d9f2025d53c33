"""Datasets: uploads are checked, copied into the artifacts store (content-addressed) and registered.

Parsing is the data package's job (``app.data``); this module only decides where a file lives
and what the registry remembers about it (sha256, format, rows, columns, detected shape).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
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


class UploadTooLarge(UserError, ValueError):
    pass


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


def add_dataset(ctx: Context, path: str | Path, name: str | None = None) -> DatasetView:
    """Parse ``path`` (a clear DataError if it is bad), store a copy and register it.

    The same bytes uploaded twice give the same stored file and the existing row.
    """
    from app.data import Limits, detect_shape, read_table

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    size = source.stat().st_size
    if size > ctx.settings.max_upload_bytes:
        raise UploadTooLarge(
            f"{source.name}: {size:,} bytes is over the upload limit of {ctx.settings.max_upload_bytes:,} bytes"
        )
    digest = _sha256(source)
    with ctx.session() as s:
        existing = s.scalar(select(Dataset).where(Dataset.sha256 == digest).order_by(Dataset.id))
        if existing is not None and Path(existing.path).is_file():
            return _view(existing)
    table = read_table(source, limits=Limits(max_bytes=ctx.settings.max_upload_bytes))
    try:
        shape = detect_shape(table).shape
        shape = getattr(shape, "value", shape)
    except Exception:
        shape = None
    stored = _store(ctx, source, digest)
    with ctx.session() as s:
        row = Dataset(
            id=issue_id(s, Dataset), name=name or source.name, path=str(stored), sha256=digest, format=str(table.fmt),
            rows=len(table.rows), columns=list(table.columns), bytes=size,
            shape=str(shape) if shape is not None else None,
        )
        s.add(row)
        s.commit()
        return _view(row)


def list_datasets(ctx: Context) -> list[DatasetView]:
    with ctx.session() as s:
        return [_view(d) for d in s.scalars(select(Dataset).order_by(Dataset.id.desc()))]


def get_dataset(ctx: Context, dataset_id: int) -> DatasetView:
    with ctx.session() as s:
        row = s.get(Dataset, dataset_id)
        if row is None:
            raise DatasetNotFound(f"no dataset with id {dataset_id}")
        return _view(row)


def runs_using(session: Session, dataset_id: int, statuses: tuple[str, ...] = ACTIVE_STATUSES) -> list[Run]:
    """Runs whose spec reads the dataset (as training or validation data), in the given statuses."""

    runs = session.scalars(select(Run).where(Run.status.in_(statuses)).order_by(Run.id))
    return [r for r in runs if any(
        ref is not None and dataset_id_of(ref) == dataset_id
        for ref in ((r.spec.get("data") or {}).get("dataset"), (r.spec.get("data") or {}).get("validation"))
    )]


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


def _store(ctx: Context, source: Path, digest: str) -> Path:
    folder = ctx.settings.uploads_dir / digest[:16]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name).lstrip(".") or "data"
    target = folder / safe_name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".upload.", dir=folder)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _view(d: Dataset) -> DatasetView:
    return DatasetView(d.id, d.name, d.path, d.sha256, d.format, d.rows, list(d.columns), d.bytes, d.shape, d.created_at)

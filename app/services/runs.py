"""Runs as the UI and the CLI see them: create (and queue), list, inspect, follow, cancel, delete.

Readers return plain frozen views (no live ORM objects), so callers never touch a session. Reading
also reaps runs whose worker vanished, so a poller always sees a dead run as ``failed``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from app.core.contract import TRAIN_QUEUE, TRAIN_TASK
from app.core.errors import UserError
from app.core.refs import bundled_name_of, dataset_id_of
from app.core.settings import Settings
from app.core.spec import RunSpec, SpecError
from app.data.sources import check_bundled_name, check_hub_dataset, hub_reference
from app.registry.ids import issue_id
from app.registry.lifecycle import (
    RESUMABLE_STATUSES,
    finish_run,
    give_up_unclaimed,
    reap_lost_runs,
    request_cancel,
)
from app.registry.lifecycle import resume_run as resume_in_registry
from app.registry.models import ACTIVE_STATUSES, Artifact, Dataset, LogLine, MetricPoint, Run, utcnow
from app.services.context import Context


class RunNotFound(UserError, LookupError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"no run with id {run_id}")


class RunActive(UserError, RuntimeError):
    """The run is queued or training; cancel it first."""


@dataclass(frozen=True)
class RunView:
    id: int
    name: str
    status: str
    model: str
    method: str
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker_host: str | None
    error: str | None
    step: int
    total_steps: int | None
    adapter_path: str | None  # the run's adapter: its best eval's when one was kept (best_step), else the last
    attempt: int = 1
    resumed_from_step: int | None = None
    last_adapter_path: str | None = None  # the last step's adapter (the same folder when its eval was the best)
    # The step of the best eval so far whose adapter is kept (while training too); once the run has its final
    # adapter, ``adapter_path`` is that one. None: no eval ranked yet, or no kept copy.
    best_step: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    @property
    def resumed(self) -> str | None:
        """"resumed from step 40 (attempt 2)" for a run that continued from a checkpoint; else None."""
        if self.attempt <= 1:
            return None
        if self.resumed_from_step is None:
            return f"attempt {self.attempt}: resumes from its last checkpoint when a worker takes it"
        return f"resumed from step {self.resumed_from_step} (attempt {self.attempt})"


@dataclass(frozen=True)
class MetricView:
    step: int
    epoch: float
    split: str
    loss: float | None
    learning_rate: float | None
    tokens_per_second: float | None
    grad_norm: float | None
    accuracy: float | None


def create_run(ctx: Context, spec: RunSpec | dict[str, Any] | str, base_dir: Path | None = None) -> int:
    """Validate the spec, record the run as ``queued`` and send "start run N" to the workers.

    ``base_dir`` is where relative data paths in the spec are read from (the spec file's folder for
    the CLI); they are stored absolute, so the worker never looks in its own working directory.
    """
    if isinstance(spec, str):
        spec = RunSpec.from_yaml(spec)
    elif isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    else:
        spec.validate()
    spec.data.dataset = checked_data_path(ctx.settings, spec.data.dataset, "data.dataset", base_dir)
    if spec.data.validation is not None:
        spec.data.validation = checked_data_path(ctx.settings, spec.data.validation, "data.validation", base_dir)
    with ctx.session() as s:
        _check_dataset_reference(s, spec.data.dataset, "data.dataset")
        if spec.data.validation is not None:
            _check_dataset_reference(s, spec.data.validation, "data.validation")
        run = Run(
            id=issue_id(s, Run), name=spec.name, status="queued", spec=spec.to_dict(), model=spec.model.name,
            method=str(spec.method["peft_type"]), step=0,
        )
        s.add(run)
        s.commit()
        run_id = run.id
    _send(ctx, run_id)
    return run_id


def _send(ctx: Context, run_id: int) -> None:
    """Send "start run N"; a run the broker would not take is failed with the reason, never left queued."""
    try:
        ctx.celery.send_task(TRAIN_TASK, args=[run_id], queue=TRAIN_QUEUE)
        with ctx.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(sent_at=utcnow()))
            s.commit()
    except Exception as exc:
        with ctx.session() as s:
            finish_run(s, run_id, "failed", f"could not queue the run on the broker: {exc}")
        raise


def checked_data_path(settings: Settings, ref: str | int, field: str, base_dir: Path | None = None) -> str | int:
    """A data file named in a spec, made absolute and confined to ``settings.data_roots``.

    Registered (``dataset:N``), bundled (``bundled:name``) and cached 🤗 (``org/name[:split]``)
    references pass unchanged, a bundled name only when it names a bundled demo and a 🤗 id only when
    the local datasets cache holds it (never downloaded). Symlinks are resolved first, so a link inside
    a root cannot lead outside it.
    """
    if dataset_id_of(ref) is not None:
        return ref
    bundled = bundled_name_of(ref)
    if bundled is not None:
        check_bundled_name(bundled, field)
        return ref
    hub = hub_reference(ref, base_dir)
    if hub is not None:
        check_hub_dataset(hub, field)
        return str(hub)
    raw = Path(str(ref)).expanduser()
    path = (raw if raw.is_absolute() else (base_dir or Path.cwd()) / raw).resolve()
    if not any(path.is_relative_to(root) for root in settings.data_roots):
        roots = ", ".join(str(r) for r in settings.data_roots)
        raise SpecError(field, f"{ref} is outside the folders runs may read data from ({roots}); "
                               "register the file with `tunestudio datasets add` or set TUNESTUDIO_DATA_ROOTS")
    if not path.is_file():
        raise SpecError(field, f"no such file: {ref} (looked for {path})")
    return str(path)


def _check_dataset_reference(session, ref: str | int, path: str) -> None:
    dataset_id = dataset_id_of(ref)
    if dataset_id is not None and session.get(Dataset, dataset_id) is None:
        raise SpecError(path, f"no registered dataset with id {dataset_id}")


def run_disk_bytes(ctx: Context, run_id: int) -> int:
    """Bytes the run's folder (adapter, checkpoints, merged model, logs) takes on disk."""
    folder = ctx.settings.run_dir(run_id)
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def list_runs(ctx: Context, status: str | list[str] | None = None, limit: int = 200) -> list[RunView]:
    """Newest first; ``status`` filters to one status or a list of them."""
    with ctx.session() as s:
        reap_lost_runs(s, ctx.settings.worker_lost_seconds, ctx.settings.max_attempts)
        give_up_unclaimed(s, ctx.settings.give_up_queued_seconds)
        query = select(Run).order_by(Run.id.desc()).limit(limit)
        if status:
            query = query.where(Run.status.in_([status] if isinstance(status, str) else status))
        runs = list(s.scalars(query))
        adapters = _adapters(s, [r.id for r in runs])
        return [_view(r, adapters.get(r.id, _NO_ADAPTER)) for r in runs]


def get_run(ctx: Context, run_id: int) -> RunView:
    with ctx.session() as s:
        reap_lost_runs(s, ctx.settings.worker_lost_seconds, ctx.settings.max_attempts)
        run = s.get(Run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        return _view(run, _adapters(s, [run_id]).get(run_id, _NO_ADAPTER))


def get_spec(ctx: Context, run_id: int) -> RunSpec:
    return RunSpec.from_dict(get_run(ctx, run_id).spec)


def revision(ctx: Context, run_id: int) -> tuple:
    """A cheap fingerprint of everything a run view shows; it changes whenever the run writes anything.

    Pollers compare it before reading the metric history, so an idle view costs three small queries.
    """
    with ctx.session() as s:
        reap_lost_runs(s, ctx.settings.worker_lost_seconds, ctx.settings.max_attempts)
        row = s.execute(select(Run.status, Run.step).where(Run.id == run_id)).first()
        if row is None:
            raise RunNotFound(run_id)
        points = s.scalar(select(func.count()).select_from(MetricPoint).where(MetricPoint.run_id == run_id))
        last_log = s.scalar(select(func.max(LogLine.id)).where(LogLine.run_id == run_id))
    return (row.status, row.step, points, last_log)


def metrics(ctx: Context, run_id: int, since_step: int | None = None) -> list[MetricView]:
    """Metric points in the order written; ``since_step`` keeps only points after that step."""
    with ctx.session() as s:
        query = select(MetricPoint).where(MetricPoint.run_id == run_id).order_by(MetricPoint.id)
        if since_step is not None:
            query = query.where(MetricPoint.step > since_step)
        return [
            MetricView(p.step, p.epoch, p.split, p.loss, p.learning_rate, p.tokens_per_second, p.grad_norm, p.accuracy)
            for p in s.scalars(query)
        ]


def logs(ctx: Context, run_id: int, tail: int = 200) -> list[str]:
    """The last ``tail`` log lines of a run, oldest first, as ``HH:MM:SS level message``."""
    with ctx.session() as s:
        rows = list(
            s.scalars(select(LogLine).where(LogLine.run_id == run_id).order_by(LogLine.id.desc()).limit(tail))
        )
    return [f"{r.created_at:%H:%M:%S} {r.level:<5} {r.message}" for r in reversed(rows)]


def cancel_run(ctx: Context, run_id: int) -> str:
    """Ask a run to stop; returns its status afterwards (``cancelled`` at once if it never started)."""
    with ctx.session() as s:
        status = request_cancel(s, run_id)
    if status is None:
        raise RunNotFound(run_id)
    return status


def resume_run(ctx: Context, run_id: int, more_steps: int | None = None) -> RunView:
    """Queue a failed or cancelled run again; it continues from its last checkpoint (or starts over
    when it has none). ``more_steps`` trains that many steps beyond what the run had planned."""
    with ctx.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        if run.status not in RESUMABLE_STATUSES:
            raise RunActive(f"run {run_id} is {run.status}; only a failed or cancelled run can be resumed")
        spec = RunSpec.from_dict(run.spec)
        if more_steps is not None:
            if more_steps <= 0:
                raise SpecError("training.max_steps", f"more steps must be a positive number, got {more_steps}")
            spec.training.max_steps = (run.total_steps or spec.training.max_steps or run.step) + more_steps
            spec.validate()
        if not resume_in_registry(s, run_id, spec.to_dict()):
            raise RunActive(f"run {run_id} changed status while being resumed; try again")
    _send(ctx, run_id)
    return get_run(ctx, run_id)


def delete_run(ctx: Context, run_id: int) -> None:
    """Remove a finished run, its metric points, logs and artifact files."""
    with ctx.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise RunNotFound(run_id)
        if run.status in ACTIVE_STATUSES:
            raise RunActive(f"run {run_id} is {run.status}; cancel it and wait for it to stop before deleting")
        s.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id))
        s.execute(delete(LogLine).where(LogLine.run_id == run_id))
        s.execute(delete(Artifact).where(Artifact.run_id == run_id))
        s.delete(run)
        s.commit()
    shutil.rmtree(ctx.settings.run_dir(run_id), ignore_errors=True)
    for exported in ctx.settings.exports_dir.glob(f"run-{run_id}-*.zip"):
        exported.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Adapters:
    last: str | None = None  # the final adapter folder (kind "adapter")
    best: str | None = None  # the kept best eval's adapter folder (kind "best_adapter"), if still there
    best_step: int | None = None

    @property
    def run_adapter(self) -> str | None:
        """What the run's download, the playground and merges use: the best eval's adapter when one was
        kept, else the last; none before the run has saved its final adapter."""
        return (self.best or self.last) if self.last else None


_NO_ADAPTER = _Adapters()


def _adapters(session, run_ids: list[int]) -> dict[int, _Adapters]:
    """Each run's final adapter and kept best one. The engine registers a ``best_adapter`` artifact at
    every new best eval and removes every other best folder, so only the newest such row can be kept;
    its folder is gone when a resumed attempt found the kept copy was not its own best eval's."""
    if not run_ids:
        return {}
    newest_best = (select(func.max(Artifact.id))
                   .where(Artifact.run_id.in_(run_ids), Artifact.kind == "best_adapter").group_by(Artifact.run_id))
    rows = session.execute(
        select(Artifact.run_id, Artifact.kind, Artifact.path, Artifact.step).order_by(Artifact.id)
        .where(Artifact.run_id.in_(run_ids), (Artifact.kind == "adapter") | Artifact.id.in_(newest_best))
    )
    found: dict[int, _Adapters] = {}
    for run_id, kind, path, step in rows:
        was = found.get(run_id, _NO_ADAPTER)
        if kind == "adapter":
            found[run_id] = _Adapters(path, was.best, was.best_step)
        elif Path(path).is_dir():
            found[run_id] = _Adapters(was.last, path, step)
    return found


def _view(run: Run, adapters: _Adapters) -> RunView:
    return RunView(
        id=run.id, name=run.name, status=run.status, model=run.model, method=run.method, spec=dict(run.spec),
        created_at=run.created_at, started_at=run.started_at, finished_at=run.finished_at,
        heartbeat_at=run.heartbeat_at, worker_host=run.worker_host, error=run.error, step=run.step,
        total_steps=run.total_steps, adapter_path=adapters.run_adapter, attempt=run.attempt or 1,
        resumed_from_step=run.resumed_from_step, last_adapter_path=adapters.last,
        best_step=adapters.best_step if adapters.best else None,
    )

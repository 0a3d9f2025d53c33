"""``train_run(run_id)``: the only task. Thin and idempotent: everything comes from the registry and
goes back to it; a redelivered message for a run that is no longer ``queued`` does nothing."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import update

from app.core.contract import TRAIN_QUEUE, TRAIN_TASK
from app.core.errors import describe
from app.core.settings import Settings
from app.core.spec import RunSpec
from app.data.errors import DataError
from app.data.sources import resolve_dataset_file
from app.registry.db import Registry
from app.registry.lifecycle import claim_run, finish_run, log
from app.registry.models import Artifact, Dataset, MetricPoint, Run
from worker.celery_app import app
from worker.heartbeat import Heartbeat, Reaper

logger = logging.getLogger(__name__)


class RegistryReporter:
    """Writes the engine's progress into the registry as it happens."""

    def __init__(self, registry: Registry, run_id: int, beat: Heartbeat) -> None:
        self.registry, self.run_id, self.beat = registry, run_id, beat

    def metric(self, point) -> None:  # noqa: ANN001
        with self.registry.session() as s:
            s.add(MetricPoint(run_id=self.run_id, **point.__dict__))
            s.commit()

    def log(self, message: str, level: str = "info") -> None:
        logger.info("run %s: %s", self.run_id, message)
        with self.registry.session() as s:
            log(s, self.run_id, message, level)

    def progress(self, step: int, total_steps: int) -> None:
        with self.registry.session() as s:
            s.execute(update(Run).where(Run.id == self.run_id).values(step=step, total_steps=total_steps))
            s.commit()

    def artifact(self, kind: str, path: Path, step: int | None) -> None:
        import hashlib

        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.relative_to(path).as_posix().encode())
            digest.update(f.read_bytes())
        with self.registry.session() as s:
            s.add(Artifact(run_id=self.run_id, kind=kind, path=str(path), step=step,
                           bytes=sum(f.stat().st_size for f in files), sha256=digest.hexdigest()))
            s.commit()

    def should_stop(self) -> bool:
        return self.beat.cancel_requested.is_set()


def execute_run(run_id: int, settings: Settings, registry: Registry) -> str:
    """Claim the run and train it; returns the final status. Never leaves the run ``running``."""
    from worker.engine import Cancelled, train

    with registry.session() as s:
        if not claim_run(s, run_id, settings.worker_name):
            status = s.get(Run, run_id).status if s.get(Run, run_id) else "missing"
            logger.info("run %s is %s, not queued; nothing to do", run_id, status)
            return status
        spec_dict = s.get(Run, run_id).spec
    try:
        with Heartbeat(registry, run_id, settings.heartbeat_seconds) as beat:
            reporter = RegistryReporter(registry, run_id, beat)
            try:
                spec = RunSpec.from_dict(spec_dict)

                def registered(dataset_id: int) -> Path:
                    with registry.session() as s:
                        row = s.get(Dataset, dataset_id)
                    if row is None:
                        raise DataError("no_source", f"no registered dataset with id {dataset_id}", field="data.dataset")
                    return Path(row.path)

                result = train(
                    spec, settings.run_dir(run_id), reporter, settings.models_dir,
                    resolver=lambda ref: resolve_dataset_file(ref, registered, settings.bundled_dir,
                                                              hub_dir=settings.hub_data_dir),
                )
                with registry.session() as s:
                    finish_run(s, run_id, "succeeded")
                reporter.log(f"succeeded after {result.steps} steps")
                return "succeeded"
            except Cancelled as exc:
                reporter.log(str(exc), "warn")
                with registry.session() as s:
                    finish_run(s, run_id, "cancelled")
                return "cancelled"
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run
                message = describe(exc)
                reporter.log(message, "error")
                reporter.log(traceback.format_exc(limit=8), "debug")
                with registry.session() as s:
                    finish_run(s, run_id, "failed", message)
                return "failed"
    except BaseException as exc:
        with registry.session() as s:
            finish_run(s, run_id, "failed", f"worker stopped: {describe(exc)}")
        raise


class _WorkerState:
    """The worker process's registry and reaper, built when the worker starts (not at import)."""

    registry: Registry | None = None
    reaper: Reaper | None = None


_state = _WorkerState()


def _registry(settings: Settings) -> Registry:
    if _state.registry is None:
        _state.registry = Registry(settings.database_url)
    return _state.registry


@worker_ready.connect
def _on_worker_ready(**_: object) -> None:
    settings = Settings.from_env()
    settings.ensure_dirs()
    _state.reaper = Reaper(
        _registry(settings), settings.worker_lost_seconds,
        send=lambda run_id: train_run.apply_async(args=[run_id], queue=TRAIN_QUEUE),
        resend_after=settings.resend_queued_seconds, give_up_after=settings.give_up_queued_seconds,
        max_attempts=settings.max_attempts,
    )
    reaped = _state.reaper.reap()
    if reaped:
        logger.warning("runs %s lost their worker: re-queued, or failed when out of attempts", reaped)
    _state.reaper.start()


@worker_shutdown.connect
def _on_worker_shutdown(**_: object) -> None:
    if _state.reaper is not None:
        _state.reaper.stop()


@app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_run(run_id: int) -> str:
    settings = Settings.from_env()
    settings.ensure_dirs()
    return execute_run(int(run_id), settings, _registry(settings))

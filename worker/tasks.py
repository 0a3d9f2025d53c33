"""``train_run(run_id)``: the only task. Thin and idempotent: everything comes from the registry and
goes back to it; a redelivered message for a run that is no longer ``queued`` does nothing.

A run that has a complete checkpoint in its folder (an attempt re-queued after its worker died or
stopped, or resumed by a person) continues from the newest one. A worker asked to stop (SIGTERM: Celery's
warm shutdown) has the engine checkpoint between steps and gives the run back to the queue.
"""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from sqlalchemy import delete, update

from app.core.contract import TRAIN_QUEUE, TRAIN_TASK
from app.core.errors import describe
from app.core.settings import Settings
from app.core.spec import RunSpec
from app.data.errors import DataError
from app.data.sources import resolve_dataset_file
from app.registry.db import Registry
from app.registry.lifecycle import claim_run, finish_run, log, mark_resumed, requeue_run, status_of
from app.registry.models import Artifact, Dataset, MetricPoint, Run
from worker.celery_app import app
from worker.checkpoints import latest_checkpoint
from worker.heartbeat import Heartbeat, Reaper

logger = logging.getLogger(__name__)


class RegistryReporter:
    """Writes the engine's progress into the registry as it happens; ``stopping`` is set when the worker
    is asked to stop (the engine then checkpoints and raises ``Preempted``)."""

    def __init__(self, registry: Registry, run_id: int, beat: Heartbeat,
                 stopping: threading.Event | None = None) -> None:
        self.registry, self.run_id, self.beat = registry, run_id, beat
        self.stopping = stopping or threading.Event()

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
            pruned = [row.id for row in s.query(Artifact).filter(Artifact.run_id == self.run_id,
                                                                 Artifact.kind == "checkpoint")
                      if not Path(row.path).exists()]
            if pruned:  # checkpoints the engine removed (only the newest are kept)
                s.execute(delete(Artifact).where(Artifact.id.in_(pruned)))
            s.commit()

    def should_stop(self) -> bool:
        return self.beat.cancel_requested.is_set()

    def preempted(self) -> bool:
        return self.stopping.is_set()


def resume_point(registry: Registry, run_id: int, out_dir: Path, attempt: int,
                 reporter: RegistryReporter) -> Path | None:
    """The checkpoint this attempt continues from (the newest complete one in the run's folder; a folder
    left half-written is removed), or None to start at step 0. A later attempt first drops what the
    interrupted one recorded after that step, so the run's history is the uninterrupted run's."""
    found = latest_checkpoint(out_dir)
    if found is None and attempt <= 1:
        return None
    step = found[0] if found else 0
    with registry.session() as s:
        mark_resumed(s, run_id, step)
    reporter.log(f"resumed from step {step} (attempt {attempt})" if found else
                 f"resumed from step 0 (attempt {attempt}): no checkpoint was written, so it starts over")
    return found[1] if found else None


def execute_run(run_id: int, settings: Settings, registry: Registry, stopping: threading.Event | None = None) -> str:
    """Claim the run and train it (from its newest checkpoint, if it has one); returns the status it
    ends in: final, or ``queued`` when ``stopping`` (the worker's SIGTERM) gave it back. Never leaves
    the run ``running``."""
    from worker.engine import Cancelled, Preempted, train

    with registry.session() as s:
        if not claim_run(s, run_id, settings.worker_name):
            status = s.get(Run, run_id).status if s.get(Run, run_id) else "missing"
            logger.info("run %s is %s, not queued; nothing to do", run_id, status)
            return status
        run = s.get(Run, run_id)
        spec_dict, attempt = run.spec, run.attempt or 1
    try:
        with Heartbeat(registry, run_id, settings.heartbeat_seconds) as beat:
            reporter = RegistryReporter(registry, run_id, beat, stopping)
            try:
                spec = RunSpec.from_dict(spec_dict)
                resume_from = resume_point(registry, run_id, settings.run_dir(run_id), attempt, reporter)

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
                    resume_from=resume_from, data_cache_dir=settings.data_cache_dir,
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
            except Preempted as exc:
                kept = (f"checkpoint at step {exc.step}" if exc.checkpoint is not None
                        else f"no checkpoint (stopped before step {exc.step + 1})")
                with registry.session() as s:
                    requeue_run(s, run_id, f"worker stopping (SIGTERM): {kept}", settings.max_attempts)
                    return status_of(s, run_id) or "missing"
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
    """The worker process's registry and reaper, built when the worker starts (not at import), and
    ``stopping``, set when the worker is asked to stop (its running run then checkpoints and goes back)."""

    def __init__(self) -> None:
        self.registry: Registry | None = None
        self.reaper: Reaper | None = None
        self.stopping = threading.Event()


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


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: object) -> None:
    """SIGTERM (warm shutdown; from Celery's signal handler, in the main thread, between two bytecodes of
    the run training there with the solo pool): the engine sees ``stopping`` before its next step. The
    reaper stops first, so this worker does not send the run it is about to give back to itself."""
    _state.stopping.set()
    if _state.reaper is not None:
        _state.reaper.stop()


@worker_shutdown.connect
def _on_worker_shutdown(**_: object) -> None:
    if _state.reaper is not None:
        _state.reaper.stop()


@app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_run(run_id: int) -> str:
    settings = Settings.from_env()
    settings.ensure_dirs()
    return execute_run(int(run_id), settings, _registry(settings), _state.stopping)

"""Run status transitions, each one atomic (a conditional UPDATE), shared by services and workers.

queued -> running -> succeeded | failed | cancelled, plus cancelling (asked by a user, honoured by
the engine between steps). A worker that stops heartbeating has its runs re-queued (to resume from
their last checkpoint) or, after ``max_attempts``, failed by :func:`reap_lost_runs`, which the worker
calls when it starts and periodically, and readers call when they poll, so a run is never left
``running`` by a dead process. A worker asked to stop gives its run back with :func:`requeue_run`;
a person resumes a failed or cancelled run with :func:`resume_run`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.registry.models import FINAL_STATUSES, LogLine, MetricPoint, Run, utcnow

NEVER_STARTED = ("never started: no worker took the run within {hours:g} h "
                 "(is a worker running on the 'training' queue?)")
WORKER_LOST = "worker lost: no heartbeat for {seconds:.0f}s (the worker process died or was killed)"
REQUEUED = "{reason}; re-queued to resume from its last checkpoint (attempt {attempt} of {attempts})"
RESUMABLE_STATUSES = ("failed", "cancelled")


def claim_run(session: Session, run_id: int, worker_host: str) -> bool:
    """queued -> running for this worker; False if the run is not queued (cancelled, redelivered...)."""
    now = utcnow()
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now, worker_host=worker_host)
    )
    session.commit()
    return result.rowcount == 1


def heartbeat(session: Session, run_id: int) -> str | None:
    """Record that the worker is alive; returns the run's current status (to notice cancels)."""
    session.execute(
        update(Run).where(Run.id == run_id, Run.status.in_(("running", "cancelling"))).values(heartbeat_at=utcnow())
    )
    session.commit()
    return session.scalar(select(Run.status).where(Run.id == run_id))


def status_of(session: Session, run_id: int) -> str | None:
    return session.scalar(select(Run.status).where(Run.id == run_id).execution_options(populate_existing=True))


def request_cancel(session: Session, run_id: int) -> str | None:
    """Queued runs end at once; running ones are asked to stop. Returns the new status."""
    now = utcnow()
    session.execute(
        update(Run).where(Run.id == run_id, Run.status == "queued").values(status="cancelled", finished_at=now)
    )
    session.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(status="cancelling"))
    session.commit()
    return status_of(session, run_id)


def finish_run(session: Session, run_id: int, status: str, error: str | None = None) -> None:
    """Move an active run to a final status (a final run is never overwritten)."""
    assert status in FINAL_STATUSES, status
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.not_in(FINAL_STATUSES))
        .values(status=status, error=error, finished_at=utcnow())
    )
    session.commit()


def reap_lost_runs(session: Session, lost_after_seconds: float, max_attempts: int = 1) -> list[int]:
    """Runs whose heartbeat is older than ``lost_after_seconds``: a cancelling one ends cancelled, a
    running one is re-queued while it has attempts left (the reaper sends it again) and fails after."""
    cutoff = utcnow() - timedelta(seconds=lost_after_seconds)
    stale = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff)
    lost = WORKER_LOST.format(seconds=lost_after_seconds)
    rows = list(session.execute(select(Run.id, Run.status, Run.attempt)
                                .where(Run.status.in_(("running", "cancelling")), stale)))
    reaped = []
    for run_id, status, attempt in rows:
        guard = (Run.id == run_id, Run.status == status, Run.attempt == attempt, stale)
        if status == "cancelling":
            values, message, level = {"status": "cancelled", "finished_at": utcnow()}, f"{lost}; cancelled", "warn"
        elif attempt < max_attempts:
            values = _requeue_values(attempt)
            message = REQUEUED.format(reason=lost, attempt=attempt + 1, attempts=max_attempts)
            level = "warn"
        else:
            values, message, level = {"status": "failed", "error": lost, "finished_at": utcnow()}, lost, "error"
        if session.execute(update(Run).where(*guard).values(**values)).rowcount:
            session.add(LogLine(run_id=run_id, level=level, message=message))
            reaped.append(run_id)
    session.commit()
    return reaped


def requeue_run(session: Session, run_id: int, reason: str, max_attempts: int) -> bool:
    """A worker that is stopping (SIGTERM: a deploy, ``docker compose stop``) gives its running run back
    after writing a checkpoint. False, and the run is failed, once it has used ``max_attempts``."""
    run = session.get(Run, run_id, populate_existing=True)
    if run is None or run.status not in ("running", "cancelling"):
        return False
    attempt = run.attempt  # read before the UPDATE, which refreshes ``run`` in the session
    if run.status == "running" and attempt < max_attempts:
        session.execute(update(Run).where(Run.id == run_id, Run.status == "running", Run.attempt == attempt)
                        .values(**_requeue_values(attempt)))
        session.add(LogLine(run_id=run_id, level="warn", message=REQUEUED.format(
            reason=reason, attempt=attempt + 1, attempts=max_attempts)))
        session.commit()
        return True
    final = "cancelled" if run.status == "cancelling" else "failed"
    session.execute(update(Run).where(Run.id == run_id, Run.status == run.status)
                    .values(status=final, error=None if final == "cancelled" else reason, finished_at=utcnow()))
    session.add(LogLine(run_id=run_id, level="error" if final == "failed" else "warn", message=reason))
    session.commit()
    return False


def resume_run(session: Session, run_id: int, spec: dict | None = None) -> bool:
    """failed | cancelled -> queued as the next attempt, optionally with an updated spec (more steps).
    False when the run is not in a resumable status."""
    values = {**_requeue_values(Run.attempt), "error": None, "finished_at": None}
    if spec is not None:
        values["spec"] = spec
    result = session.execute(update(Run).where(Run.id == run_id, Run.status.in_(RESUMABLE_STATUSES)).values(**values))
    session.commit()
    return result.rowcount == 1


def _requeue_values(attempt) -> dict:
    """Back to the queue as the next attempt; ``sent_at`` cleared, so the reaper sends it at once."""
    return {"status": "queued", "attempt": attempt + 1, "sent_at": None, "heartbeat_at": None, "worker_host": None,
            "resumed_from_step": None}


def mark_resumed(session: Session, run_id: int, step: int) -> None:
    """This attempt began at the checkpoint of ``step``: what the interrupted attempt logged after it
    is dropped, so the run's history is the one an uninterrupted run would have. Step 0 is starting
    over (no checkpoint): everything goes, the step-0 eval too, since the attempt evaluates again."""
    session.execute(update(Run).where(Run.id == run_id).values(resumed_from_step=step, step=step))
    after = MetricPoint.step > step if step > 0 else MetricPoint.step >= 0
    session.query(MetricPoint).filter(MetricPoint.run_id == run_id, after).delete()
    session.commit()


def claim_resends(session: Session, resend_after_seconds: float) -> list[int]:
    """Queued runs whose "start run N" went out more than ``resend_after_seconds`` ago: each is stamped as
    sent again here (so two reapers never both send it) and returned for the caller to send.

    A message can be lost (a broker restarted without persistence, a queue purged); a duplicate is
    harmless because ``claim_run`` lets only one delivery start the run.
    """
    cutoff = utcnow() - timedelta(seconds=resend_after_seconds)
    due = []
    for run_id, sent_at in session.execute(select(Run.id, Run.sent_at).where(Run.status == "queued")):
        if sent_at is not None and _aware(sent_at) >= cutoff:
            continue
        same = Run.sent_at.is_(None) if sent_at is None else Run.sent_at == sent_at
        if session.execute(update(Run).where(Run.id == run_id, Run.status == "queued", same)
                           .values(sent_at=utcnow())).rowcount:
            due.append(run_id)
    session.commit()
    return due


def give_up_unclaimed(session: Session, give_up_after_seconds: float) -> list[int]:
    """Fail runs still queued ``give_up_after_seconds`` after they were created, saying why."""
    cutoff = utcnow() - timedelta(seconds=give_up_after_seconds)
    reason = NEVER_STARTED.format(hours=give_up_after_seconds / 3600)
    ids = list(session.scalars(select(Run.id).where(Run.status == "queued", Run.created_at < cutoff)))
    failed = []
    for run_id in ids:
        if session.execute(update(Run).where(Run.id == run_id, Run.status == "queued")
                           .values(status="failed", error=reason, finished_at=utcnow())).rowcount:
            session.add(LogLine(run_id=run_id, level="error", message=reason))
            failed.append(run_id)
    session.commit()
    return failed


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def log(session: Session, run_id: int, message: str, level: str = "info") -> None:
    session.add(LogLine(run_id=run_id, level=level, message=message))
    session.commit()

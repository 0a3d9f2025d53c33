"""Run status transitions, each one atomic (a conditional UPDATE), shared by services and workers.

queued -> running -> succeeded | failed | cancelled, plus cancelling (asked by a user, honoured by
the engine between steps). A worker that stops heartbeating has its runs failed by
:func:`reap_lost_runs`, which the worker calls when it starts and periodically, and readers call
when they poll, so a run is never left ``running`` by a dead process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.registry.models import FINAL_STATUSES, LogLine, Run, utcnow

NEVER_STARTED = ("never started: no worker took the run within {hours:g} h "
                 "(is a worker running on the 'training' queue?)")
WORKER_LOST = "worker lost: no heartbeat for {seconds:.0f}s (the worker process died or was killed)"


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


def reap_lost_runs(session: Session, lost_after_seconds: float) -> list[int]:
    """Fail every running/cancelling run whose heartbeat is older than ``lost_after_seconds``."""
    cutoff = utcnow() - timedelta(seconds=lost_after_seconds)
    stale = or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < cutoff)
    ids = list(session.scalars(select(Run.id).where(Run.status.in_(("running", "cancelling")), stale)))
    reaped = []
    for run_id in ids:
        result = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(("running", "cancelling")), stale)
            .values(status="failed", error=WORKER_LOST.format(seconds=lost_after_seconds), finished_at=utcnow())
        )
        if result.rowcount:
            session.add(LogLine(run_id=run_id, level="error", message=WORKER_LOST.format(seconds=lost_after_seconds)))
            reaped.append(run_id)
    session.commit()
    return reaped


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

"""Liveness: a heartbeat thread per running run, and the reaper that re-queues (or, out of attempts,
fails) runs whose worker died.

The heartbeat runs in its own thread so a long training step never looks like a dead worker; it also
reads the run's status, so a cancel request is noticed without a query per training step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.registry.db import Registry
from app.registry.lifecycle import claim_resends, give_up_unclaimed, heartbeat, reap_lost_runs

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, registry: Registry, run_id: int, interval: float) -> None:
        self.registry, self.run_id, self.interval = registry, run_id, interval
        self.cancel_requested = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-run-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval * 2 + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the reaper tolerates several
                continue

    def _beat(self) -> None:
        with self.registry.session() as s:
            status = heartbeat(s, self.run_id)
        if status in ("cancelling", "cancelled") or status is None:
            self.cancel_requested.set()


class Reaper:
    """Periodically fails runs whose heartbeat is older than ``lost_after`` seconds, re-sends the start
    message of runs queued longer than ``resend_after`` (a lost broker message would leave them queued
    forever) and fails those still queued after ``give_up_after``."""

    def __init__(self, registry: Registry, lost_after: float, send: Callable[[int], None] | None = None,
                 resend_after: float = 300.0, give_up_after: float = 86_400.0, max_attempts: int = 1) -> None:
        self.registry, self.lost_after, self.max_attempts = registry, lost_after, max_attempts
        self.send, self.resend_after, self.give_up_after = send, resend_after, give_up_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-reaper", daemon=True)

    def reap(self) -> list[int]:
        with self.registry.session() as s:
            lost = reap_lost_runs(s, self.lost_after, self.max_attempts)
            give_up_unclaimed(s, self.give_up_after)
            due = claim_resends(s, self.resend_after) if self.send is not None else []
        for run_id in due:
            self.send(run_id)
        if due:
            logger.warning("re-sent the start message of runs %s: queued longer than %.0f s", due, self.resend_after)
        return lost

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(max(1.0, self.lost_after / 2)):
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable; try next round
                continue

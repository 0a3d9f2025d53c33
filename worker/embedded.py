"""The embedded worker: one Celery worker subprocess owned by the studio (or a test).

A subprocess (not a thread) so training never blocks the UI and a crash or kill of training
cannot take the studio down; it gets the studio's settings through the environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app.core.settings import Settings


def exit_with_parent(parent_pid: int, interval: float = 2.0) -> None:
    """In the worker: exit when the studio that started us is gone (its own session, so no signal
    reaches us); the run it was training is then failed by the reaper as "worker lost"."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class EmbeddedWorker:
    def __init__(self, settings: Settings, log_file: Path | None = None, name: str = "embedded") -> None:
        self.settings = settings
        self.log_file = log_file or settings.home / "worker.log"
        self.name = name
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", "worker", "--name", self.name]

    def start(self) -> EmbeddedWorker:
        if self.process is not None and self.process.poll() is None:
            return self
        self.settings.ensure_dirs()
        env = {**os.environ, **self.settings.env()}
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env["TUNESTUDIO_PARENT_PID"] = str(os.getpid())
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.process = subprocess.Popen(
            self.command(), env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM: Celery finishes nothing new), then SIGKILL if it does not exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        self.process = None

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

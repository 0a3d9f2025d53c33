"""`tunestudio serve` run for real in a subprocess, as a person starts it (with --host and --port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the studio exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the studio did not answer at {url} within {timeout}s:\n{log.read_text()[-4000:]}")


class Studio:
    def __init__(self, home: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.extra_env = env or {}
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = home / "studio.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Studio:
        env = {**os.environ, "TUNESTUDIO_HOME": str(self.home), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TUNESTUDIO_HEARTBEAT_SECONDS": "1",
               **self.extra_env}
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "wb")  # noqa: SIM115 - open for the child's lifetime
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)], env=env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.url, self.proc, self.log)
        except BaseException:
            self.stop()  # a studio that never answered must not outlive the test
            raise
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGINT: the studio stops its embedded worker on the way out.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()

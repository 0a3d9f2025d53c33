"""The studio served for real (`tunestudio serve` in a subprocess) and Debian's Chromium driving it.

Every request the page makes is recorded; a test fails if any leaves the studio's own address.
Screenshots of each step go to ``test-artifacts/browser/`` (gitignored).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
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
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = home / "studio.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Studio:
        env = {**os.environ, "TUNESTUDIO_HOME": str(self.home), "TUNESTUDIO_PORT": str(self.port),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TUNESTUDIO_HEARTBEAT_SECONDS": "1"}
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "wb")  # noqa: SIM115 - open for the child's lifetime
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        wait_http(self.url, self.proc, self.log)
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


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make chromium)")
    home = tmp_path_factory.mktemp("studio-home")
    server = Studio(home, free_port()).start()
    yield server
    server.stop()


class RequestLog:
    def __init__(self, base: str) -> None:
        self.base = base
        self.urls: list[str] = []

    def record(self, request) -> None:
        self.urls.append(request.url)

    def outside(self) -> list[str]:
        allowed = (self.base + "/", "data:", "blob:", "about:")
        return [u for u in self.urls if not (u == self.base or u.startswith(allowed))]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, studio, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    log = RequestLog(studio.url)
    pg.on("request", log.record)
    pg.requests = log
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield pg
    context.close()
    outside = log.outside()
    assert not outside, f"the page made requests outside the studio's address: {outside[:10]}"


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

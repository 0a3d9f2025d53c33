"""The studio served for real (`tunestudio serve` in a subprocess) and Debian's Chromium driving it.

Every request the page makes is recorded; a test fails if any leaves the studio's own address.
Screenshots of each step go to ``test-artifacts/browser/`` (gitignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.studio import ROOT, Studio, free_port

ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


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


def tab(page, name: str):
    """The button of a tab by its id, not its label (``app.ui.app`` gives tab ``name`` elem_id
    ``tab-<name>``, and Gradio its button ``tab-<name>-button``): new, run, runs, playground."""
    return page.locator(f"#tab-{name}-button")

"""A cancelled run resumed from the Runs tab, in Chromium: the studio's own worker continues it from the
checkpoint the cancel kept, and the run view says so and shows it finish."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from app.core.settings import Settings
from app.services import cancel_run, create_run, get_run
from app.services.context import Context
from tests.browser.conftest import shot, tab
from tests.browser.test_studio import pick, set_number
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv

pytestmark = pytest.mark.browser


def _wait(ctx, run_id: int, predicate, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_run(ctx, run_id)
        if predicate(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} is {run.status} at step {run.step}")


def test_a_cancelled_run_resumed_from_the_runs_tab_finishes_from_its_checkpoint(page, studio):
    # The inputs live in the studio's home, one of the places a run may read data from.
    model_dir = save_tiny_model(studio.home / "inputs" / "llama")
    data = write_mapping_csv(studio.home / "inputs" / "colours.csv")
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(studio.home)}))
    try:
        spec = mapping_spec(model_dir, data, max_steps=60, eval_every=0, checkpoint_minutes=0)
        spec["name"] = "resume-me"
        run_id = create_run(ctx, spec)
        _wait(ctx, run_id, lambda r: r.status == "running" and r.step >= 2)
        cancel_run(ctx, run_id)
        cancelled = _wait(ctx, run_id, lambda r: r.is_final)
        assert cancelled.status == "cancelled" and 2 <= cancelled.step < 60, cancelled

        page.goto(studio.url)
        tab(page, "runs").click()
        expect(page.locator("#runs-table")).to_contain_text("resume-me", timeout=60_000)
        resume = page.locator("#runs-resume")
        pick(page, "runs-selected", re.compile("resume-me"))
        expect(resume).to_be_visible(timeout=30_000)  # offered: the run is cancelled
        set_number(page, "runs-more-steps", 4)
        shot(page, "resume-1-offered")
        resume.click()
        expect(page.locator("#runs-message")).to_contain_text(
            f"Run #{run_id} is queued again (attempt 2, now 64 steps); it continues from its last checkpoint.",
            timeout=30_000)
        expect(resume).to_be_hidden()

        page.locator("#runs-open").click()
        expect(tab(page, "run")).to_have_attribute("aria-selected", "true", timeout=30_000)
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=600_000)
        expect(page.locator("#run-resumed")).to_have_text(
            f"resumed from step {cancelled.step} (attempt 2)", timeout=30_000)
        expect(page.locator("#run-step")).to_contain_text("step 64 / 64")
        shot(page, "resume-2-finished")
        run = get_run(ctx, run_id)
        assert (run.status, run.attempt, run.resumed_from_step, run.step) == ("succeeded", 2, cancelled.step, 64)
    finally:
        ctx.close()

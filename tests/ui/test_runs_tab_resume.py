"""The Runs tab offers Resume for a failed or cancelled run only and queues it again through the service
(more steps optional); the run view's header says which checkpoint an attempt resumed from."""

from __future__ import annotations

import html

import pytest

from app.core.settings import Settings
from app.registry.lifecycle import claim_run, finish_run, mark_resumed
from app.services import create_run, get_run
from app.services.context import Context
from app.ui.tabs import run_view
from app.ui.tabs import runs as runs_tab

SPEC = {
    "name": "resumable <b>run</b>",
    "model": {"name": "SmolLM2-135M-Instruct"},
    "data": {"dataset": "pairs.csv"},
    "method": {"peft_type": "LORA"},
    "training": {"max_steps": 40},
}


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    (tmp_path / "pairs.csv").write_text("prompt,response\nhi,hello\n")
    monkeypatch.chdir(tmp_path)
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def _ended(ctx, status: str) -> int:
    run_id = create_run(ctx, SPEC)
    with ctx.session() as s:
        assert claim_run(s, run_id, "host-a")
        finish_run(s, run_id, status, "worker lost" if status == "failed" else None)
    return run_id


def _visible(update) -> bool:
    return update["visible"]


@pytest.mark.parametrize(("status", "offered"), [("failed", True), ("cancelled", True), ("succeeded", False)])
def test_resume_is_offered_for_a_failed_or_cancelled_run_only(ctx, status, offered):
    shown = runs_tab.detail(ctx, _ended(ctx, status))
    assert _visible(shown["runs.resume_group"]) is offered
    assert _visible(runs_tab.detail(ctx, None)["runs.resume_group"]) is False


def test_resume_queues_the_run_again_with_more_steps_and_hides_the_button(ctx):
    run_id = _ended(ctx, "cancelled")
    answer = runs_tab.resume(ctx, run_id, 5)
    assert html.unescape(answer["runs.message"]) == (
        f"Run #{run_id} is queued again (attempt 2, now 45 steps); it continues from its last checkpoint.")
    assert _visible(answer["runs.resume_group"]) is False
    run = get_run(ctx, run_id)
    assert (run.status, run.attempt, run.spec["training"]["max_steps"]) == ("queued", 2, 45)

    refused = runs_tab.resume(ctx, run_id, 0)  # now queued: not resumable
    assert "runs.resume_group" not in refused
    assert html.unescape(refused["runs.message"]) == (
        f"<div class='ts-error'>run {run_id} is queued; only a failed or cancelled run can be resumed</div>")
    assert runs_tab.resume(ctx, None, 0) == {"runs.message": "Pick a run first."}


def test_resume_with_zero_more_steps_keeps_the_plan(ctx):
    run_id = _ended(ctx, "failed")
    answer = runs_tab.resume(ctx, run_id, 0)
    assert "now" not in html.unescape(answer["runs.message"])
    assert get_run(ctx, run_id).spec["training"]["max_steps"] == 40


def test_the_run_view_header_says_which_step_the_attempt_resumed_from(ctx):
    run_id = _ended(ctx, "failed")
    assert "run-resumed" not in run_view._header(ctx, get_run(ctx, run_id))
    runs_tab.resume(ctx, run_id, 0)
    with ctx.session() as s:
        assert claim_run(s, run_id, "host-b")
        mark_resumed(s, run_id, 12)
    header = run_view._header(ctx, get_run(ctx, run_id))
    assert "<div id='run-resumed'>" in header
    assert html.unescape(header.split("<div id='run-resumed'>")[1].split("</div>")[0]) == (
        "resumed from step 12 (attempt 2)")
    assert "<b>" not in header  # the run's name is shown as text

"""A stopped run is a resumed run: re-queued when its worker is lost or stops, resumable by a person."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import update

from app.core.spec import SpecError
from app.registry.lifecycle import claim_run, finish_run, heartbeat, mark_resumed, requeue_run
from app.registry.models import LogLine, MetricPoint, Run, utcnow
from app.services import RunActive, cancel_run, create_run, get_run, metrics, resume_run
from tests.registry.test_cli_datasets import tunestudio

SPEC = {
    "name": "resumable",
    "model": {"name": "SmolLM2-135M-Instruct"},
    "data": {"dataset": "pairs.csv"},
    "method": {"peft_type": "LORA", "r": 4, "target_modules": "attention"},
    "training": {"max_steps": 40},
}


@pytest.fixture(autouse=True)
def _data_next_to_the_spec(tmp_path, monkeypatch):
    (tmp_path / "pairs.csv").write_text("prompt,response\nhi,hello\n")
    monkeypatch.chdir(tmp_path)


def _running(ctx, host: str = "host-a") -> int:
    run_id = create_run(ctx, SPEC)
    with ctx.session() as s:
        assert claim_run(s, run_id, host)
    return run_id


def _lose_heartbeat(ctx, run_id: int) -> None:
    with ctx.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        s.commit()


def _log(ctx, run_id: int) -> list[str]:
    with ctx.session() as s:
        return list(s.scalars(sa.select(LogLine.message).where(LogLine.run_id == run_id).order_by(LogLine.id)))


def test_a_run_that_lost_its_worker_is_requeued_then_failed_when_out_of_attempts(ctx):
    assert ctx.settings.max_attempts == 2
    run_id = _running(ctx)
    _lose_heartbeat(ctx, run_id)
    run = get_run(ctx, run_id)
    assert (run.status, run.attempt, run.worker_host) == ("queued", 2, None)
    assert "re-queued to resume from its last checkpoint (attempt 2 of 2)" in _log(ctx, run_id)[-1]
    with ctx.session() as s:
        assert s.get(Run, run_id).sent_at is None  # the worker's reaper sends it at once
        assert claim_run(s, run_id, "host-b")
    _lose_heartbeat(ctx, run_id)
    run = get_run(ctx, run_id)
    assert (run.status, run.attempt) == ("failed", 2)
    assert "worker lost" in run.error


def test_a_cancelling_run_that_lost_its_worker_ends_cancelled(ctx):
    run_id = _running(ctx)
    assert cancel_run(ctx, run_id) == "cancelling"
    _lose_heartbeat(ctx, run_id)
    assert get_run(ctx, run_id).status == "cancelled"


def test_a_stopping_worker_gives_its_run_back_once_then_the_run_fails(ctx):
    run_id = _running(ctx)
    with ctx.session() as s:
        assert requeue_run(s, run_id, "worker stopping (SIGTERM): checkpoint at step 7", ctx.settings.max_attempts)
    run = get_run(ctx, run_id)
    assert (run.status, run.attempt) == ("queued", 2)
    assert _log(ctx, run_id)[-1] == ("worker stopping (SIGTERM): checkpoint at step 7; re-queued to resume from "
                                     "its last checkpoint (attempt 2 of 2)")
    with ctx.session() as s:
        assert claim_run(s, run_id, "host-b")
        assert heartbeat(s, run_id) == "running"
        assert not requeue_run(s, run_id, "worker stopping (SIGTERM)", ctx.settings.max_attempts)
    run = get_run(ctx, run_id)
    assert (run.status, run.error) == ("failed", "worker stopping (SIGTERM)")


def test_a_resumed_attempt_drops_what_the_interrupted_one_logged_after_its_checkpoint(ctx):
    run_id = _running(ctx)
    with ctx.session() as s:
        s.add_all([MetricPoint(run_id=run_id, step=step, epoch=0.0, split="train", loss=1.0) for step in (1, 2, 3, 4)])
        s.commit()
        mark_resumed(s, run_id, 2)
    assert [p.step for p in metrics(ctx, run_id)] == [1, 2]
    run = get_run(ctx, run_id)
    assert (run.resumed_from_step, run.step) == (2, 2)


def test_an_attempt_that_starts_over_drops_the_whole_history_the_step_0_eval_too(ctx):
    run_id = _running(ctx)
    with ctx.session() as s:
        s.add_all([MetricPoint(run_id=run_id, step=0, epoch=0.0, split="eval", loss=2.0),
                   MetricPoint(run_id=run_id, step=1, epoch=0.1, split="train", loss=1.0)])
        s.commit()
        mark_resumed(s, run_id, 0)
    assert metrics(ctx, run_id) == []
    assert get_run(ctx, run_id).resumed_from_step == 0


def test_a_person_resumes_a_failed_run_with_more_steps_but_never_a_running_or_finished_one(ctx):
    run_id = _running(ctx)
    with pytest.raises(RunActive, match="only a failed or cancelled run can be resumed"):
        resume_run(ctx, run_id)
    with ctx.session() as s:
        finish_run(s, run_id, "failed", "worker lost")
        s.execute(update(Run).where(Run.id == run_id).values(total_steps=40, step=25))
        s.commit()
    with pytest.raises(SpecError, match="training.max_steps: more steps must be a positive number"):
        resume_run(ctx, run_id, more_steps=0)
    run = resume_run(ctx, run_id, more_steps=10)
    assert (run.status, run.attempt, run.error, run.finished_at) == ("queued", 2, None, None)
    assert run.spec["training"]["max_steps"] == 50
    with ctx.session() as s:
        assert claim_run(s, run_id, "host-b")
        finish_run(s, run_id, "succeeded")
    with pytest.raises(RunActive, match="run 1 is succeeded"):
        resume_run(ctx, run_id)


def test_runs_resume_on_the_command_line(tmp_path):
    home = tmp_path / "home"
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cli-resume\nmodel: {name: SmolLM2-135M-Instruct}\ndata: {dataset: pairs.csv}\n"
                    "method: {peft_type: LORA}\ntraining: {max_steps: 20}\n")
    assert tunestudio(home, "train", str(spec)).returncode == 0
    refused = tunestudio(home, "runs", "resume", "1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: run 1 is queued; only a failed or cancelled run can be resumed"
    assert tunestudio(home, "runs", "cancel", "1").stdout.strip() == "run 1: cancelled"
    resumed = tunestudio(home, "runs", "resume", "1", "--more-steps", "5")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "run 1: queued, attempt 2 (now 25 steps); it continues from its last checkpoint"
    shown = tunestudio(home, "runs", "show", "1").stdout
    assert "  resumed  attempt 2: resumes from its last checkpoint when a worker takes it" in shown

"""A run whose worker is killed (SIGKILL) or asked to stop (SIGTERM) mid-run is re-queued, resumed from its
checkpoint by another worker, and ends with exactly the adapter and loss history of an uninterrupted run
with the same seed: on CPU, bit for bit. Real PostgreSQL, Redis, Celery worker subprocesses and engine."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.registry.models import Run
from app.services import create_run, get_run, logs, metrics
from tests.engine.helpers import mapping_spec
from tests.integration.conftest import wait_for
from worker.checkpoints import STATE_FILE, checkpoint_dir
from worker.embedded import EmbeddedWorker

pytestmark = pytest.mark.integration

STEPS = 24
EVERY = 4  # checkpoint_every
INTERRUPT_AT = 6  # the worker is stopped once the run is past this step: a checkpoint (step 4) lies behind it


def _spec(model_dir: Path, data: Path, name: str) -> dict:
    spec = mapping_spec(model_dir, data, max_steps=STEPS, batch_size=4, eval_every=8, checkpoint_every=EVERY,
                        checkpoint_minutes=0, scheduler="cosine")
    spec["name"] = name
    spec["method"]["lora_dropout"] = 0.1  # the run draws randomness as it trains: the RNG must resume too
    return spec


def _history(ctx, run_id: int) -> list[tuple]:
    """Every metric point except the wall-clock speed, in the order written."""
    return [(p.step, p.split, p.loss, p.learning_rate, p.grad_norm) for p in metrics(ctx, run_id)]


def _adapter(ctx, run_id: int) -> dict[str, torch.Tensor]:
    return load_file(Path(get_run(ctx, run_id).adapter_path) / "adapter_model.safetensors")


def _step_when_past(ctx, run_id: int, step: int, timeout: float = 300.0) -> int:
    """Poll the run's step closely (a fast machine trains a tiny step in tens of milliseconds) until it is
    past ``step``; returns the step seen. Fails if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ctx.session() as s:
            run = s.get(Run, run_id, populate_existing=True)
            seen, status = run.step, run.status
        assert status in ("queued", "running"), f"run {run_id} is {status} before it could be interrupted"
        if status == "running" and seen > step:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} never passed step {step}")


def _resumed_step(ctx, run_id: int) -> int:
    lines = [line for line in logs(ctx, run_id, tail=500) if re.search(r"resumed from step \d+ \(attempt", line)]
    assert len(lines) == 1, lines
    return int(re.search(r"resumed from step (\d+) \(attempt 2\)$", lines[0]).group(1))


@pytest.fixture(scope="module")
def uninterrupted(scaled_out, inputs):
    with EmbeddedWorker(scaled_out.settings, name="pg-whole"):
        run_id = create_run(scaled_out, _spec(*inputs, "whole"))
        run = wait_for(scaled_out, run_id, lambda r: r.is_final, timeout=600)
    assert run.status == "succeeded", (run.error, logs(scaled_out, run_id))
    assert run.attempt == 1 and run.resumed is None
    return _history(scaled_out, run_id), _adapter(scaled_out, run_id)


def _assert_same_as_uninterrupted(ctx, run_id: int, uninterrupted) -> None:
    history, adapter = uninterrupted
    assert _history(ctx, run_id) == history
    got = _adapter(ctx, run_id)
    assert got.keys() == adapter.keys() and all(torch.equal(got[k], adapter[k]) for k in adapter)


def test_a_sigkilled_workers_run_resumes_from_its_checkpoint_and_equals_the_uninterrupted_run(
        scaled_out, inputs, uninterrupted):
    ctx = scaled_out
    worker = EmbeddedWorker(ctx.settings, name="pg-doomed").start()
    try:
        run_id = create_run(ctx, _spec(*inputs, "killed"))
        killed_after = _step_when_past(ctx, run_id, INTERRUPT_AT)
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
    finally:
        worker.stop()
    run = wait_for(ctx, run_id, lambda r: r.status != "running", timeout=60)
    assert (run.status, run.attempt) == ("queued", 2), logs(ctx, run_id)
    assert "worker lost" in logs(ctx, run_id)[-1]

    with EmbeddedWorker(ctx.settings, name="pg-rescue"):
        run = wait_for(ctx, run_id, lambda r: r.is_final, timeout=600)
    assert (run.status, run.worker_host, run.attempt) == ("succeeded", "pg-rescue", 2), (run.error, logs(ctx, run_id))
    step = _resumed_step(ctx, run_id)
    assert 0 < step <= killed_after and step % EVERY == 0  # the newest checkpoint written before the kill
    assert run.resumed == f"resumed from step {step} (attempt 2)"
    _assert_same_as_uninterrupted(ctx, run_id, uninterrupted)


def test_a_sigtermed_worker_checkpoints_gives_the_run_back_and_the_next_worker_finishes_it_identically(
        scaled_out, inputs, uninterrupted):
    ctx = scaled_out
    worker = EmbeddedWorker(ctx.settings, name="pg-stopping").start()
    try:
        run_id = create_run(ctx, _spec(*inputs, "stopped"))
        signalled_after = _step_when_past(ctx, run_id, INTERRUPT_AT)
        worker.process.send_signal(signal.SIGTERM)  # Celery's warm shutdown: the run goes back, then it exits
        assert worker.process.wait(timeout=180) == 0
    finally:
        worker.stop()
    run = get_run(ctx, run_id)
    assert (run.status, run.attempt, run.worker_host) == ("queued", 2, None), logs(ctx, run_id)
    given_back = logs(ctx, run_id)[-1]
    found = re.search(r"worker stopping \(SIGTERM\): checkpoint at step (\d+); re-queued to resume from its last "
                      r"checkpoint \(attempt 2 of 2\)$", given_back)
    assert found, given_back
    step = int(found.group(1))
    assert signalled_after <= step < STEPS  # written at once, at the step it was at: not the last periodic one
    assert (checkpoint_dir(ctx.settings.run_dir(run_id), step) / STATE_FILE).is_file()
    assert run.step == step

    with EmbeddedWorker(ctx.settings, name="pg-next"):
        run = wait_for(ctx, run_id, lambda r: r.is_final, timeout=600)
    assert (run.status, run.worker_host, run.attempt) == ("succeeded", "pg-next", 2), (run.error, logs(ctx, run_id))
    assert _resumed_step(ctx, run_id) == step
    assert run.resumed == f"resumed from step {step} (attempt 2)"
    _assert_same_as_uninterrupted(ctx, run_id, uninterrupted)

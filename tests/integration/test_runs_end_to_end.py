"""A run through the real parts: registry, broker, a Celery worker subprocess, the engine."""

from __future__ import annotations

import os
import signal
import zipfile
from datetime import timedelta

import pytest
import torch

import tuners
from app.services import cancel_run, create_run, export_adapter_zip, list_runs, logs, metrics
from tests.engine.helpers import mapping_spec
from tests.integration.conftest import wait_for
from tests.support.tiny_models import tokenizer
from worker.embedded import EmbeddedWorker

pytestmark = pytest.mark.integration


def _trained_behaviour(model_dir, zip_path, tmp_path) -> float:
    """How much more the exported adapter prefers the learned answer than the base model does."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(folder)
    tok = tokenizer("llama")
    prompt = tok("Q1: what colour is the snow? A:", return_tensors="pt")
    target = tok(" white", add_special_tokens=False)["input_ids"][0]
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        before = base(**prompt).logits[0, -1].log_softmax(-1)[target]
        after = tuners.load(base, folder)(**prompt).logits[0, -1].log_softmax(-1)[target]
    return float(after - before)


def _succeeds_and_exports(ctx, inputs, tmp_path, worker_name: str):
    model_dir, data = inputs
    run_id = create_run(ctx, mapping_spec(model_dir, data, max_steps=12, eval_every=6))
    seen = {wait_for(ctx, run_id, lambda r: r.status != "queued").status}
    run = wait_for(ctx, run_id, lambda r: r.is_final)
    seen.add(run.status)
    assert run.status == "succeeded", (run.error, logs(ctx, run_id))
    assert seen <= {"running", "succeeded"}
    points = metrics(ctx, run_id)
    train = [p for p in points if p.split == "train"]
    evals = [p for p in points if p.split == "eval"]
    assert [p.step for p in train] == list(range(1, 13))
    assert [p.step for p in evals] == [0, 6, 12] and evals[-1].loss < 0.6 * evals[0].loss
    assert run.worker_host == worker_name, "the registry names the worker by its --name"
    assert run.started_at and run.finished_at
    zip_path = export_adapter_zip(ctx, run_id, tmp_path / "adapter.zip")
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_config.yaml"} <= names
    assert _trained_behaviour(model_dir, zip_path, tmp_path) > 2.0


def test_embedded_run_goes_queued_running_succeeded_and_exports_a_working_adapter(embedded, inputs, tmp_path):
    ctx, _ = embedded
    _succeeds_and_exports(ctx, inputs, tmp_path, "embedded")


def test_embedded_cancel_mid_run_ends_cancelled_with_metric_history_kept(embedded, inputs):
    ctx, _ = embedded
    model_dir, data = inputs
    run_id = create_run(ctx, mapping_spec(model_dir, data, max_steps=400, eval_every=0))
    wait_for(ctx, run_id, lambda r: r.step >= 2)
    assert cancel_run(ctx, run_id) == "cancelling"
    run = wait_for(ctx, run_id, lambda r: r.is_final, timeout=60)
    assert run.status == "cancelled" and run.adapter_path is None
    kept = [p for p in metrics(ctx, run_id) if p.split == "train"]
    assert len(kept) >= 2 and run.step < 400


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["model"].update(name="org/definitely-not-a-model"), "model.name: cannot load a tokenizer"),
        (lambda s: s["data"].update(shape="prompt_completion", mapping={"prompt": "question", "completion": "completion"}),
         "question"),
    ],
)
def test_embedded_bad_spec_fails_before_training_with_a_clear_message(embedded, inputs, edit, message):
    ctx, _ = embedded
    spec = mapping_spec(*inputs)
    edit(spec)
    run_id = create_run(ctx, spec)
    run = wait_for(ctx, run_id, lambda r: r.is_final, timeout=60)
    assert run.status == "failed" and message in run.error, run.error
    assert metrics(ctx, run_id) == []


def test_scaled_out_run_on_redis_and_postgresql_succeeds(scaled_out, inputs, tmp_path):
    with EmbeddedWorker(scaled_out.settings, name="pg-a"):
        _succeeds_and_exports(scaled_out, inputs, tmp_path, "pg-a")


def test_a_sigkilled_workers_run_is_requeued_and_finished_by_another_worker(scaled_out, inputs):
    model_dir, data = inputs
    worker = EmbeddedWorker(scaled_out.settings, name="pg-doomed").start()
    try:
        run_id = create_run(scaled_out, mapping_spec(model_dir, data, max_steps=60, eval_every=0))
        wait_for(scaled_out, run_id, lambda r: r.status == "running" and r.step >= 1)
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)
        run = wait_for(scaled_out, run_id, lambda r: r.status != "running", timeout=30)
    finally:
        worker.stop()
    assert (run.status, run.attempt) == ("queued", 2)
    assert "worker lost" in logs(scaled_out, run_id)[-1] and "re-queued" in logs(scaled_out, run_id)[-1]
    with EmbeddedWorker(scaled_out.settings, name="pg-rescue"):
        run = wait_for(scaled_out, run_id, lambda r: r.is_final, timeout=240)
    assert (run.status, run.worker_host, run.attempt) == ("succeeded", "pg-rescue", 2)
    assert [r.id for r in list_runs(scaled_out, status="running")] == []


def test_a_run_whose_broker_message_was_lost_is_resent_and_trains(scaled_out, inputs, tmp_path):
    """The message is dropped from Redis before any worker runs; the worker that starts later re-sends it."""
    import redis
    from sqlalchemy import update

    from app.registry.models import Run, utcnow

    model_dir, data = inputs
    run_id = create_run(scaled_out, mapping_spec(model_dir, data, max_steps=4, eval_every=0))
    queue = redis.Redis(host="127.0.0.1", port=6379, db=11)
    assert queue.llen("training") == 1
    queue.delete("training")
    with scaled_out.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(sent_at=utcnow() - timedelta(hours=1)))
        s.commit()
    with EmbeddedWorker(scaled_out.settings, name="pg-resender"):
        run = wait_for(scaled_out, run_id, lambda r: r.is_final, timeout=180)
    assert run.status == "succeeded", (run.error, logs(scaled_out, run_id))

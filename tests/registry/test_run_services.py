from __future__ import annotations

import pytest
from sqlalchemy import update

from app.core.spec import SpecError
from app.registry.lifecycle import claim_run
from app.registry.models import MetricPoint, Run, utcnow
from app.services import (
    RunActive,
    RunNotFound,
    cancel_run,
    create_run,
    delete_run,
    get_run,
    list_runs,
    metrics,
)

SPEC = {
    "name": "svc",
    "model": {"name": "SmolLM2-135M-Instruct"},
    "data": {"dataset": "pairs.csv"},
    "method": {"peft_type": "LORA", "r": 4, "target_modules": "attention"},
}


@pytest.fixture(autouse=True)
def _data_next_to_the_spec(tmp_path, monkeypatch):
    (tmp_path / "pairs.csv").write_text("prompt,response\nhi,hello\n")
    monkeypatch.chdir(tmp_path)


def test_a_created_run_is_queued_with_its_spec_and_a_broker_message(ctx):
    run_id = create_run(ctx, SPEC)
    run = get_run(ctx, run_id)
    assert (run.status, run.model, run.method, run.name) == ("queued", "SmolLM2-135M-Instruct", "LORA", "svc")
    assert run.spec["method"]["r"] == 4
    assert [r.id for r in list_runs(ctx, status="queued")] == [run_id]
    import sqlalchemy as sa

    broker = sa.create_engine(ctx.settings.broker_url.removeprefix("sqla+"))
    with broker.connect() as conn:
        payloads = [row[0] for row in conn.execute(sa.text("SELECT payload FROM kombu_message"))]
    broker.dispose()
    assert len(payloads) == 1 and "worker.tasks.train_run" in payloads[0]


def test_a_reference_to_an_unregistered_dataset_is_refused(ctx):
    with pytest.raises(SpecError, match="data.dataset: no registered dataset with id 42"):
        create_run(ctx, {**SPEC, "data": {"dataset": 42}})
    assert list_runs(ctx) == []


def test_cancel_ends_a_queued_run_at_once_and_asks_a_running_one(ctx):
    queued = create_run(ctx, SPEC)
    assert cancel_run(ctx, queued) == "cancelled"
    running = create_run(ctx, SPEC)
    with ctx.session() as s:
        assert claim_run(s, running, "host-a")
        assert not claim_run(s, running, "host-b")
    assert cancel_run(ctx, running) == "cancelling"
    with pytest.raises(RunNotFound):
        cancel_run(ctx, 999)


def test_delete_refuses_active_runs_and_removes_metrics_and_files(ctx):
    run_id = create_run(ctx, SPEC)
    with pytest.raises(RunActive):
        delete_run(ctx, run_id)
    cancel_run(ctx, run_id)
    with ctx.session() as s:
        s.add(MetricPoint(run_id=run_id, step=1, epoch=0.1, split="train", loss=2.0))
        s.commit()
    folder = ctx.settings.run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "x.txt").write_text("x")
    assert len(metrics(ctx, run_id)) == 1
    delete_run(ctx, run_id)
    assert metrics(ctx, run_id) == [] and not folder.exists()
    with pytest.raises(RunNotFound):
        get_run(ctx, run_id)


def _create_and_delete_newest(ctx) -> list[int]:
    ids = [create_run(ctx, SPEC) for _ in range(3)]
    cancel_run(ctx, ids[-1])
    delete_run(ctx, ids[-1])
    ids.append(create_run(ctx, SPEC))
    for run_id in ids[:2] + ids[3:]:
        cancel_run(ctx, run_id)
        delete_run(ctx, run_id)
    ids.append(create_run(ctx, SPEC))
    return ids


def test_a_deleted_runs_id_is_never_issued_again(ctx):
    assert _create_and_delete_newest(ctx) == [1, 2, 3, 4, 5]


@pytest.mark.integration
def test_a_deleted_runs_id_is_never_issued_again_on_postgresql(tmp_path, pg_url):
    from app.core.settings import Settings
    from app.services import Context

    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home"),
                                          "TUNESTUDIO_DATABASE_URL": pg_url, "TUNESTUDIO_DATA_ROOTS": str(tmp_path)}))
    try:
        assert _create_and_delete_newest(ctx) == [1, 2, 3, 4, 5]
    finally:
        ctx.close()


def test_a_deleted_datasets_id_is_never_issued_again(ctx, tmp_path):
    from app.services.datasets import add_dataset, delete_dataset

    first = tmp_path / "a.csv"
    first.write_text("text,label\nhello,1\nbye,0\n")
    second = tmp_path / "b.csv"
    second.write_text("text,label\ngood,1\nbad,0\n")
    gone = add_dataset(ctx, first).id
    delete_dataset(ctx, gone)
    assert add_dataset(ctx, second).id == gone + 1


def test_a_queued_run_is_resent_once_per_interval_and_given_up_after_the_limit(ctx):
    from datetime import timedelta as td

    from app.registry.lifecycle import claim_resends

    fresh, stale, ancient = (create_run(ctx, SPEC) for _ in range(3))
    with ctx.session() as s:
        s.execute(update(Run).where(Run.id == stale).values(sent_at=utcnow() - td(hours=1)))
        s.execute(update(Run).where(Run.id == ancient).values(created_at=utcnow() - td(days=2),
                                                              sent_at=utcnow() - td(days=2)))
        s.commit()
        assert claim_resends(s, 300) == [stale, ancient]
        assert claim_resends(s, 300) == [], "a re-sent run waits another interval"
    runs = {r.id: r for r in list_runs(ctx)}
    assert runs[fresh].status == runs[stale].status == "queued"
    assert runs[ancient].status == "failed"
    assert runs[ancient].error.startswith("never started: no worker took the run within 24 h")

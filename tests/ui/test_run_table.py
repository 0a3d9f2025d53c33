"""The Runs tab's rows come from the registry: best eval loss, duration, dataset name, filters."""

from datetime import UTC, datetime, timedelta

import pytest

from app.registry.models import MetricPoint, Run
from app.services import datasets, run_table
from app.services.context import Context
from app.settings import Settings


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def add_run(ctx, name, status, dataset, evals=(), method="LORA", seconds=None):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with ctx.session() as s:
        run = Run(name=name, status=status, spec={"data": {"dataset": dataset}}, model="/models/tiny-llama",
                  method=method, step=0, started_at=start if seconds else None,
                  finished_at=start + timedelta(seconds=seconds) if seconds else None)
        s.add(run)
        s.flush()
        for step, loss in evals:
            s.add(MetricPoint(run_id=run.id, step=step, epoch=0.0, split="eval", loss=loss))
        s.commit()
        return run.id


def test_rows_show_best_eval_loss_duration_and_the_dataset_file_name(ctx, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n", encoding="utf-8")
    view = datasets.add_dataset(ctx, path)
    first = add_run(ctx, "a", "succeeded", f"dataset:{view.id}", evals=[(1, 2.0), (2, 1.25), (3, 1.5)], seconds=75)
    second = add_run(ctx, "b", "failed", "dataset:999", method="IA3")
    rows = {r.id: r for r in run_table.run_rows(ctx)}
    assert rows[first].best_eval_loss == 1.25 and rows[first].duration == "1m 15s"
    assert rows[first].dataset == "reviews.csv" and rows[first].model == "tiny-llama"
    assert rows[second].dataset == "dataset:999 (deleted)" and rows[second].best_eval_loss is None
    assert rows[first].cells()[6] == "1.2500" and rows[second].cells()[6] == "–"


def test_filters_by_status_and_text(ctx):
    add_run(ctx, "alpha", "succeeded", "x.csv")
    add_run(ctx, "beta", "failed", "y.csv", method="IA3")
    assert [r.name for r in run_table.run_rows(ctx, status="failed")] == ["beta"]
    assert [r.name for r in run_table.run_rows(ctx, text="ia3")] == ["beta"]
    assert [r.name for r in run_table.run_rows(ctx, status="all", text="")] == ["beta", "alpha"]

"""The best eval in the run view (a marker on the loss chart, a line under the progress, two downloads)
and early stopping in the wizard's train step (a switch and a patience, one spec field)."""

from __future__ import annotations

import math
import zipfile
from datetime import UTC, datetime

import pytest

from app.core.settings import Settings
from app.core.spec import SpecError
from app.registry.models import Artifact, MetricPoint, Run
from app.services import draft, monitor
from app.services.context import Context
from app.services.runs import MetricView, RunView
from app.services.wizard import EARLY_STOPPING_PATIENCE, WizardChoices, build_spec
from app.ui.tabs import run_view


def point(step, loss, split="eval", accuracy=None):
    return MetricView(step, step / 10, split, loss, None, None, None, accuracy)


def view(status="succeeded", best_step=None, adapter="a", metric=None):
    spec = {"training": {"best_metric": metric}} if metric else {}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return RunView(1, "r", status, "m", "LORA", spec, now, None, None, None, None, None, 20, 20, adapter,
                   last_adapter_path=adapter, best_step=best_step)


POINTS = [point(0, 3.0), point(1, 2.9, "train"), point(10, 1.5), point(20, 1.8), point(20, 1.9)]


def test_the_best_eval_is_one_marked_point_on_the_eval_curve():
    best = monitor.best_eval(view(best_step=10), POINTS)
    assert best == monitor.BestEval(10, "loss", 1.5, 1.5)
    frame = monitor.loss_frame(POINTS, best=best)
    marked = frame[frame.series == monitor.BEST_SERIES]
    assert marked[["step", "loss"]].values.tolist() == [[10, 1.5]]
    assert frame[frame.series == "eval"].step.tolist() == [0, 10, 20, 20]
    # before any eval is ranked the series is named (the chart fixes its colours from the first frame) but empty
    empty = monitor.loss_frame(POINTS)
    placeholder = empty[empty.series == monitor.BEST_SERIES]
    assert len(placeholder) == 1 and math.isnan(placeholder.loss.iloc[0])


def test_the_best_eval_is_the_first_point_of_its_step_and_accuracy_names_its_own_figure():
    # stopped early at step 20: the sample eval and the last eval (whole split) share the step
    assert monitor.best_eval(view(best_step=20), POINTS).loss == 1.8
    points = [point(0, 3.0, accuracy=0.4), point(10, 1.5, accuracy=0.8)]
    assert monitor.best_eval(view(best_step=10, metric="accuracy"), points) == monitor.BestEval(10, "accuracy", 0.8,
                                                                                               1.5)
    assert monitor.best_eval(view(best_step=None), POINTS) is None
    assert monitor.best_eval(view(best_step=30), POINTS) is None  # a resumed attempt has not got there again


@pytest.mark.parametrize(("status", "adapter", "text"), [
    ("succeeded", "a", "Best eval loss 1.5000 at step 10 (kept as the adapter)"),
    ("running", None, "Best eval loss 1.5000 at step 10 so far (its adapter is kept)"),
    ("cancelled", None, "Best eval loss 1.5000 at step 10"),
])
def test_the_best_line_says_what_became_of_the_adapter(status, adapter, text):
    run = view(status, best_step=10, adapter=adapter)
    snap = monitor.Snapshot(run, monitor.progress(run, POINTS), monitor.loss_frame(POINTS), "",
                            monitor.best_eval(run, POINTS))
    assert run_view.best_line(snap) == f"<div class='ts-best'>{text}</div>"
    assert run_view.best_line(monitor.Snapshot(run, snap.progress, snap.frame, "")) == ""


def test_a_finished_run_offers_the_best_adapter_and_the_last_one(tmp_path):
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    try:
        folders = {}
        for name, weights in (("best", b"best weights"), ("adapter", b"last weights")):
            folders[name] = ctx.settings.run_dir(1) / (f"{name}/step-10" if name == "best" else name)
            folders[name].mkdir(parents=True)
            (folders[name] / "adapter_model.safetensors").write_bytes(weights)
        with ctx.session() as s:
            run = Run(name="best-run", status="succeeded", spec={"training": {}}, model="m", method="LORA",
                      step=20, total_steps=20)
            s.add(run)
            s.flush()
            s.add_all([MetricPoint(run_id=run.id, step=st, epoch=st / 20, split="eval", loss=loss)
                       for st, loss in ((0, 3.0), (10, 1.5), (20, 1.8))])
            s.add_all([Artifact(run_id=run.id, kind=kind, path=str(folders[name]), step=st, bytes=1, sha256="0" * 64)
                       for kind, name, st in (("best_adapter", "best", 10), ("adapter", "adapter", 20))])
            s.commit()
            run_id = run.id
        drawn = run_view.draw(ctx, run_id, None)
    finally:
        ctx.close()

    assert drawn["run.best"] == "<div class='ts-best'>Best eval loss 1.5000 at step 10 (kept as the adapter)</div>"
    frame = drawn["run.chart"]
    assert frame[frame.series == monitor.BEST_SERIES][["step", "loss"]].values.tolist() == [[10, 1.5]]
    downloads = {name: drawn[name]["value"] for name in ("run.download", "run.download_last")}
    assert all(drawn[name]["visible"] for name in downloads)
    with zipfile.ZipFile(downloads["run.download"]) as best, zipfile.ZipFile(downloads["run.download_last"]) as last:
        assert best.read("adapter_model.safetensors") == b"best weights"
        assert last.read("adapter_model.safetensors") == b"last weights"


def choices(**train) -> WizardChoices:
    return WizardChoices(name="x", model="SmolLM2-135M-Instruct", dataset="dataset:1", peft_type="LORA",
                         method_values={}, shape="instruction", **{"eval_every": 10, **train})


def test_the_early_stopping_switch_and_patience_are_one_spec_field():
    assert build_spec(choices()).training.early_stopping_patience == 0
    assert build_spec(choices(early_stopping_patience=5)).training.early_stopping_patience == 0  # switch off
    assert build_spec(choices(early_stopping=True)).training.early_stopping_patience == EARLY_STOPPING_PATIENCE
    assert build_spec(choices(early_stopping=True, early_stopping_patience=2)).training.early_stopping_patience == 2
    with pytest.raises(SpecError) as err:
        build_spec(choices(early_stopping=True, early_stopping_patience=0))
    assert err.value.path == "training.early_stopping_patience"
    with pytest.raises(SpecError, match="eval_every above 0") as err:
        build_spec(choices(early_stopping=True, eval_every=0))
    assert err.value.path == "training.early_stopping_patience"


@pytest.mark.parametrize("patience", [0, 4])
def test_a_run_s_early_stopping_comes_back_into_the_wizard(patience):
    spec = build_spec(choices(early_stopping=bool(patience), early_stopping_patience=patience or 1))
    values = draft.from_spec(spec, 3)["values"]
    assert values["train.early_stopping"] is bool(patience)
    assert values["train.early_stopping_patience"] == (patience or EARLY_STOPPING_PATIENCE)
    again = build_spec(choices(**{name: values[f"train.{name}"] for name in ("early_stopping",
                                                                             "early_stopping_patience")}))
    assert again.training.early_stopping_patience == patience

"""The run view's data: chart frames, smoothing, progress and ETA, all rebuilt from registry rows."""

import math
from datetime import UTC, datetime, timedelta

from app.services import monitor
from app.services.runs import MetricView, RunView


def point(step, loss, split="train", tps=None):
    return MetricView(step, step / 10, split, loss, 1e-4, tps, 1.0, None)


def run_view(status="running", step=0, total=None, started=None, finished=None):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return RunView(1, "r", status, "m", "LORA", {}, now, started, finished, None, None, None, step, total, None)


def test_empty_frame_is_typed():
    frame = monitor.loss_frame([])
    assert len(frame) == 0
    assert {c: str(t) for c, t in frame.dtypes.items()} == {"step": "int64", "loss": "float64", "series": "object"}


def test_frame_has_raw_smoothed_and_eval_series():
    points = [point(1, 4.0), point(2, 2.0), point(2, 3.0, "eval")]
    frame = monitor.loss_frame(points)
    assert frame[frame.series == "train"].loss.tolist() == [4.0, 2.0]
    smoothed = frame[frame.series == "train (smoothed)"].loss.tolist()
    # debiased EMA: first value is the first point; second = (0.8*0.2*4 + 0.2*2) / (1 - 0.64)
    assert smoothed[0] == 4.0 and math.isclose(smoothed[1], (0.16 * 4 + 0.2 * 2) / 0.36)
    assert frame[frame.series == "eval"].loss.tolist() == [3.0]


def test_series_without_points_are_named_with_a_nan_placeholder():
    frame = monitor.loss_frame([point(1, 4.0)])
    evals = frame[frame.series == "eval"]
    assert len(evals) == 1 and math.isnan(evals.loss.iloc[0])


def test_progress_eta_from_elapsed_time_per_step():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = start + timedelta(seconds=100)
    p = monitor.progress(run_view(step=25, total=100, started=start), [point(25, 1.0, tps=500.0)], now=now)
    assert p.fraction == 0.25
    assert math.isclose(p.eta_seconds, 300.0)
    assert p.tokens_per_second == 500.0 and p.epoch == 2.5


def test_finished_run_is_complete_and_has_no_eta():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    p = monitor.progress(run_view("succeeded", 10, 10, start, start + timedelta(seconds=5)), [point(10, 1.0)])
    assert p.fraction == 1.0 and p.eta_seconds is None and p.elapsed_seconds == 5.0


def test_best_eval_loss_and_durations():
    assert monitor.best_eval_loss([point(1, 3.0, "eval"), point(2, 2.5, "eval"), point(2, 0.1)]) == 2.5
    assert monitor.best_eval_loss([point(1, 0.1)]) is None
    assert monitor.duration(75) == "1m 15s" and monitor.duration(3700) == "1h 01m" and monitor.duration(None) == "–"

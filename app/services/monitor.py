"""What the run view draws, rebuilt from the registry on every poll (nothing lives in the page).

A snapshot is a pure function of the registry's rows: status, progress (step, epoch, ETA,
tokens/s), the loss chart frame (train raw and smoothed, eval, and a marker at the best eval, whose
adapter is kept), the best eval and the log tail. Reloading the page or opening it in another
browser therefore shows exactly the same view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from app.services import runs
from app.services.context import Context

CHART_COLUMNS = {"step": "int64", "loss": "float64", "series": "object"}
SMOOTHING = 0.8
# One point on the eval curve: the best eval, whose adapter is kept (the run's adapter once it is done).
BEST_SERIES = "best checkpoint"
SERIES = ("train", "train (smoothed)", "eval", BEST_SERIES)
SERIES_COLOURS = {"train": "#a5b4fc", "train (smoothed)": "#4338ca", "eval": "#ea580c", BEST_SERIES: "#047857"}


def empty_frame() -> pd.DataFrame:
    """A typed empty chart frame (an untyped one breaks the browser's plot)."""
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in CHART_COLUMNS.items()})


def ema(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing)."""
    out, last = [], 0.0
    for n, v in enumerate(values, start=1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


@dataclass(frozen=True)
class BestEval:
    """The best eval so far on the run's ``training.best_metric``, whose adapter is kept."""

    step: int
    metric: str  # "loss" or "accuracy"
    value: float  # that figure at this eval, as its eval point has it
    loss: float  # the eval loss there: where the chart marks it


def best_eval(run: runs.RunView, points: list[runs.MetricView]) -> BestEval | None:
    """The eval point of the run's kept best adapter (``RunView.best_step``); None while there is none."""
    if run.best_step is None:
        return None
    at = next((p for p in points if p.split == "eval" and p.step == run.best_step and p.loss is not None), None)
    if at is None:  # a resumed attempt has not reached that step again yet
        return None
    if (run.spec.get("training") or {}).get("best_metric") == "accuracy" and at.accuracy is not None:
        return BestEval(at.step, "accuracy", at.accuracy, at.loss)
    return BestEval(at.step, "loss", at.loss, at.loss)


def loss_frame(points: list[runs.MetricView], prefix: str = "", best: BestEval | None = None) -> pd.DataFrame:
    train = [(p.step, p.loss) for p in points if p.split == "train" and p.loss is not None]
    evals = [(p.step, p.loss) for p in points if p.split == "eval" and p.loss is not None]
    rows = [(s, v, f"{prefix}train") for s, v in train]
    rows += [(s, v, f"{prefix}train (smoothed)") for (s, _), v in zip(train, ema([v for _, v in train]))]
    rows += [(s, v, f"{prefix}eval") for s, v in evals]
    if best is not None:
        rows.append((best.step, best.loss, f"{prefix}{BEST_SERIES}"))
    if not rows:
        return empty_frame()
    # The browser's chart fixes its colour domain from the first frame it gets: name every series
    # from the start (a NaN point draws nothing) so eval appears when its first point lands.
    present = {r[2] for r in rows}
    rows += [(rows[0][0], float("nan"), f"{prefix}{name}") for name in SERIES if f"{prefix}{name}" not in present]
    frame = pd.DataFrame(rows, columns=list(CHART_COLUMNS))
    return frame.astype(CHART_COLUMNS)


@dataclass(frozen=True)
class Progress:
    status: str
    step: int
    total_steps: int | None
    epoch: float | None
    tokens_per_second: float | None
    eta_seconds: float | None
    elapsed_seconds: float | None

    @property
    def fraction(self) -> float:
        if self.status == "succeeded":
            return 1.0
        if not self.total_steps:
            return 0.0
        return min(self.step / self.total_steps, 1.0)


def progress(run: runs.RunView, points: list[runs.MetricView], now: datetime | None = None) -> Progress:
    now = now or datetime.now(UTC)
    train = [p for p in points if p.split == "train"]
    last = train[-1] if train else None
    step = max(run.step, last.step if last else 0)
    started = _aware(run.started_at)
    end = _aware(run.finished_at) or now
    elapsed = (end - started).total_seconds() if started else None
    eta = None
    if run.status == "running" and run.total_steps and step > 0 and elapsed:
        eta = elapsed / step * max(run.total_steps - step, 0)
    speeds = [p.tokens_per_second for p in train[-5:] if p.tokens_per_second]
    return Progress(
        status=run.status, step=step, total_steps=run.total_steps, epoch=last.epoch if last else None,
        tokens_per_second=sum(speeds) / len(speeds) if speeds else None, eta_seconds=eta,
        elapsed_seconds=elapsed,
    )


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


@dataclass(frozen=True)
class Snapshot:
    run: runs.RunView
    progress: Progress
    frame: pd.DataFrame
    log: str
    best: BestEval | None = None


def snapshot(ctx: Context, run_id: int, log_tail: int = 60) -> Snapshot:
    run = runs.get_run(ctx, run_id)
    points = runs.metrics(ctx, run_id)
    best = best_eval(run, points)
    return Snapshot(
        run=run, progress=progress(run, points), frame=loss_frame(points, best=best),
        log="\n".join(runs.logs(ctx, run_id, tail=log_tail)), best=best,
    )


def best_eval_loss(points: list[runs.MetricView]) -> float | None:
    evals = [p.loss for p in points if p.split == "eval" and p.loss is not None]
    return min(evals) if evals else None


def compare_frame(ctx: Context, run_ids: list[int]) -> pd.DataFrame:
    """Eval loss of several runs on one chart (train loss, smoothed, for runs without eval points)."""
    frames = []
    for run_id in run_ids:
        points = runs.metrics(ctx, run_id)
        evals = [(p.step, p.loss) for p in points if p.split == "eval" and p.loss is not None]
        if evals:
            rows = [(s, v, f"#{run_id} eval") for s, v in evals]
        else:
            train = [(p.step, p.loss) for p in points if p.split == "train" and p.loss is not None]
            rows = [(s, v, f"#{run_id} train (smoothed)") for (s, _), v in zip(train, ema([v for _, v in train]))]
        if rows:
            frames.append(pd.DataFrame(rows, columns=list(CHART_COLUMNS)))
    if not frames:
        return empty_frame()
    return pd.concat(frames, ignore_index=True).astype(CHART_COLUMNS)


PALETTE = ("#4338ca", "#ea580c", "#059669", "#db2777", "#0891b2", "#ca8a04", "#7c3aed", "#dc2626")


def series_colours(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}

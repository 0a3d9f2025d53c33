"""The Runs tab's table: every run with status, model, recipe, dataset, best eval loss and duration,
filtered by status and a search text (which also finds a recipe's words: "dora", "nf4")."""

from __future__ import annotations

from dataclasses import dataclass

from app.core import recipe
from app.core.refs import dataset_id_of
from app.services import datasets, monitor, runs
from app.services.context import Context

COLUMNS = ["id", "name", "status", "model", "recipe", "dataset", "best eval loss", "duration"]


@dataclass(frozen=True)
class RunRow:
    id: int
    name: str
    status: str
    model: str
    recipe: str
    dataset: str
    best_eval_loss: float | None
    duration: str

    def cells(self) -> list:
        best = f"{self.best_eval_loss:.4f}" if self.best_eval_loss is not None else "–"
        return [self.id, self.name, self.status, self.model, self.recipe, self.dataset, best, self.duration]


def run_rows(ctx: Context, status: str | None = None, text: str | None = None) -> list[RunRow]:
    views = runs.list_runs(ctx, status=None if status in (None, "", "all") else status)
    needle = (text or "").strip().lower()
    names: dict[str, str] = {}
    out = []
    for r in views:
        dataset = dataset_name(ctx, r.spec.get("data", {}).get("dataset", ""), names)
        text_of_recipe = run_recipe(r)
        if needle and needle not in f"{r.name} {r.model} {r.method} {text_of_recipe} {dataset}".lower():
            continue
        started, finished = r.started_at, r.finished_at
        duration = monitor.duration((finished - started).total_seconds()) if started and finished else "–"
        out.append(RunRow(r.id, r.name, r.status, r.model.rstrip("/").rsplit("/", 1)[-1], text_of_recipe, dataset,
                          monitor.best_eval_loss(runs.metrics(ctx, r.id)), duration))
    return out


def run_recipe(run: runs.RunView) -> str:
    """The run's recipe (app.core.recipe); the bare method name for a spec without a method section."""
    return recipe.recipe(run.spec) if run.spec.get("method") else run.method


def dataset_name(ctx: Context, ref, cache: dict[str, str]) -> str:
    """A registered dataset's file name instead of its id (``dataset:3`` -> ``reviews.csv``)."""
    ref = str(ref)
    if ref not in cache:
        dataset_id = dataset_id_of(ref)
        try:
            cache[ref] = datasets.get_dataset(ctx, dataset_id).name if dataset_id is not None else ref
        except datasets.DatasetNotFound:
            cache[ref] = f"{ref} (deleted)"
    return cache[ref]

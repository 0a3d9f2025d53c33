"""Datasets: every registered data file with its size on disk and the runs that read it, and Delete.

Delete calls the same ``delete_dataset`` as ``tunestudio datasets delete``, so a dataset that a
queued or running run reads is refused in the CLI's words, and a deleted dataset's stored file goes
with it.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.services import datasets
from app.services.estimate import human_bytes
from app.ui.escape import literal
from app.ui.labels import t

COLUMNS = ["id", "name", "format", "rows", "shape", "on disk", "used by runs", "added"]


def build() -> dict[str, Block]:
    """The tab's components by name: ``datasets.table``, ``datasets.selected`` (the dataset picked),
    ``datasets.confirm`` (delete ticked), ``datasets.message`` and the buttons."""
    with gr.Row():
        gr.Markdown(t("datasets.intro"))
        refresh = gr.Button(t("run.refresh"), scale=0, size="sm", min_width=100, elem_id="datasets-refresh")
    # Cells are text (a Dataframe shows them as typed), so names and columns need no escaping here.
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label=t("datasets.table"), interactive=False, wrap=True,
                         elem_id="datasets-table")
    with gr.Row():
        selected = gr.Dropdown([], value=None, label=t("datasets.select"), scale=3, elem_id="datasets-selected")
        confirm = gr.Checkbox(False, label=t("datasets.delete.confirm"), scale=1, elem_id="datasets-confirm")
        delete = gr.Button(t("datasets.delete"), variant="stop", scale=1, elem_id="datasets-delete")
    message = gr.Markdown(elem_id="datasets-message")
    return {"datasets.refresh": refresh, "datasets.table": table, "datasets.selected": selected,
            "datasets.confirm": confirm, "datasets.delete": delete, "datasets.message": message}


def _runs_cell(usage: datasets.DatasetUsage) -> str:
    return ", ".join(f"#{r.run_id} {r.status}" for r in usage.runs) or "–"


def listing(ctx, current: Any = None) -> dict[str, Any]:
    """``datasets.table`` (one row per registered dataset, newest first) and ``datasets.selected``'s choices,
    the ``current`` pick kept while it still exists (a refused delete leaves it picked)."""
    usages = datasets.dataset_usage(ctx)
    rows = [[u.dataset.id, u.dataset.name, u.dataset.format, u.dataset.rows, u.dataset.shape or "–",
             human_bytes(u.disk_bytes), _runs_cell(u), f"{u.dataset.created_at:%Y-%m-%d %H:%M}"] for u in usages]
    choices = [(f"#{u.dataset.id} {u.dataset.name} ({human_bytes(u.disk_bytes)})", u.dataset.id) for u in usages]
    ids = [value for _, value in choices]
    kept = int(current) if current not in (None, "") and int(current) in ids else None
    return {"datasets.table": pd.DataFrame(rows, columns=COLUMNS),
            "datasets.selected": gr.Dropdown(choices=choices, value=kept)}


def delete(ctx, dataset_id, confirmed: bool) -> str:
    """``datasets.message`` after Delete: done, or why not (a run reads it: the CLI's words)."""
    if not dataset_id:
        return t("datasets.pick")
    if not confirmed:
        return t("datasets.delete.unconfirmed")
    try:
        datasets.delete_dataset(ctx, int(dataset_id))
    except Exception as exc:  # DatasetInUse / DatasetNotFound, shown as the CLI says them
        return f"<div class='ts-error' id='datasets-error'>{literal(exc)}</div>"
    return t("datasets.deleted", dataset=int(dataset_id))

"""All runs: table with filter, detail with the full config (as the YAML `tunestudio train` takes),
loss curves of several runs on one chart, a new run started from an old one's choices, a failed or
cancelled run resumed from its last checkpoint, delete with artifacts."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.core.errors import UserError
from app.registry.lifecycle import RESUMABLE_STATUSES
from app.registry.models import RUN_STATUSES
from app.services import draft, monitor, run_table, runs
from app.ui.escape import literal
from app.ui.labels import t


def build(ctx) -> dict[str, Block]:
    """The tab's components by name: the filters (``runs.status``, ``runs.text``), ``runs.table``,
    ``runs.selected`` (the run picked) with its ``runs.config``, ``runs.compare`` (the runs on the chart),
    ``runs.confirm`` (delete ticked), ``runs.resume_group`` (shown for a failed or cancelled run: its
    ``runs.more_steps`` and ``runs.resume``), ``runs.message`` and the buttons."""
    with gr.Row():
        status = gr.Dropdown(["all", *RUN_STATUSES], value="all", label=t("runs.filter.status"), scale=1,
                             elem_id="runs-filter-status")
        text = gr.Textbox(label=t("runs.filter.text"), scale=3, elem_id="runs-filter-text")
        refresh = gr.Button(t("run.refresh"), scale=0, size="sm", min_width=100, elem_id="runs-refresh")
    # The recipe is long: it gets the widest column and wraps, so every column stays in view.
    table = gr.Dataframe(pd.DataFrame(columns=run_table.COLUMNS), label=t("runs.table"), interactive=False,
                         wrap=True, column_widths=["5%", "14%", "9%", "11%", "33%", "12%", "8%", "8%"],
                         elem_id="runs-table")
    with gr.Row():
        with gr.Column():
            selected = gr.Dropdown([], value=None, label=t("runs.select"), elem_id="runs-selected")
            config = gr.Code(language="yaml", label=t("runs.config"), interactive=False, lines=12, max_lines=24,
                             elem_id="runs-config")
            with gr.Row():
                open_run = gr.Button(t("runs.open"), elem_id="runs-open")
                reuse = gr.Button(t("runs.reuse"), elem_id="runs-reuse")
                download_yaml = gr.DownloadButton(t("runs.download_yaml"), visible=False, elem_id="runs-download-yaml")
            with gr.Row(visible=False, elem_id="runs-resume-group") as resume_group:
                more_steps = gr.Number(0, precision=0, minimum=0, label=t("runs.more_steps"),
                                       elem_id="runs-more-steps")
                resume = gr.Button(t("runs.resume"), variant="primary", elem_id="runs-resume")
            with gr.Row():
                confirm = gr.Checkbox(False, label=t("runs.delete.confirm"), elem_id="runs-confirm")
                delete = gr.Button(t("runs.delete"), variant="stop", elem_id="runs-delete")
            message = gr.Markdown(elem_id="runs-message")
        with gr.Column():
            compare = gr.Dropdown([], value=[], multiselect=True, label=t("runs.compare"), elem_id="runs-compare")
            gr.Markdown(f"#### {t('runs.compare.chart')}")

            # A new plot per selection, not an update of one: Gradio's plot keeps the colour domain it
            # was first drawn with and only swaps the data on an update, so a second run ticked later
            # was never drawn (issue 11, item 3).
            @gr.render(inputs=compare, triggers=[compare.change])
            def compare_chart(ids):
                frame = monitor.compare_frame(ctx, [int(i) for i in ids or []])
                gr.LinePlot(frame if len(frame) else None, x="step", y="loss", color="series",
                            color_title=t("runs.compare.legend"), show_label=False, height=320,
                            color_map=monitor.series_colours(sorted(set(frame["series"]))), elem_id="runs-chart")
    return {"runs.status": status, "runs.text": text, "runs.refresh": refresh, "runs.table": table,
            "runs.selected": selected, "runs.config": config, "runs.download_yaml": download_yaml,
            "runs.open_run": open_run, "runs.reuse": reuse, "runs.delete": delete, "runs.confirm": confirm,
            "runs.message": message, "runs.compare": compare, "runs.resume_group": resume_group,
            "runs.more_steps": more_steps, "runs.resume": resume}


def table_and_choices(ctx, status: str, text: str):
    rows = run_table.run_rows(ctx, status, text)
    choices = [(f"#{r.id} {r.name} · {r.status}", r.id) for r in rows]
    return pd.DataFrame([r.cells() for r in rows], columns=run_table.COLUMNS), choices


def detail(ctx, run_id) -> dict[str, Any]:
    """``runs.config`` (the run's spec as YAML), ``runs.download_yaml`` (its download) and
    ``runs.resume_group`` (shown when the run can be resumed)."""
    if not run_id:
        return {"runs.config": "", "runs.download_yaml": gr.update(visible=False),
                "runs.resume_group": gr.update(visible=False)}
    spec = runs.get_spec(ctx, int(run_id))
    path = ctx.settings.exports_dir / f"run-{int(run_id)}-spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml(), encoding="utf-8")
    resumable = runs.get_run(ctx, int(run_id)).status in RESUMABLE_STATUSES
    return {"runs.config": spec.to_yaml(), "runs.download_yaml": gr.update(value=str(path), visible=True),
            "runs.resume_group": gr.update(visible=resumable)}


def resume(ctx, run_id, more_steps) -> dict[str, Any]:
    """``runs.message`` and ``runs.resume_group``: the run queued again from its last checkpoint (with
    ``more_steps`` more steps when above 0; the number box cannot be empty, so 0 means as planned), or why not."""
    if not run_id:
        return {"runs.message": "Pick a run first."}
    try:
        run = runs.resume_run(ctx, int(run_id), int(more_steps) if more_steps else None)
    except UserError as exc:
        return {"runs.message": f"<div class='ts-error'>{literal(exc)}</div>"}
    plan = f", now {run.spec['training']['max_steps']} steps" if more_steps else ""
    return {"runs.message": literal(t("runs.resume.done", run=run.id, attempt=run.attempt, plan=plan)),
            "runs.resume_group": gr.update(visible=False)}


def draft_from_run(ctx, run_id) -> tuple[Any, str]:
    """(wizard draft, message): the run's choices for a new run, or why not."""
    if not run_id:
        return gr.skip(), "Pick a run first."
    return draft.from_spec(runs.get_spec(ctx, int(run_id)), int(run_id)), ""


def delete(ctx, run_id, confirmed: bool) -> str:
    if not run_id:
        return "Pick a run first."
    if not confirmed:
        return "Tick the confirmation box to delete."
    try:
        runs.delete_run(ctx, int(run_id))
    except Exception as exc:
        return f"<div class='ts-error'>{literal(exc)}</div>"
    return f"Run #{run_id} and its files were deleted."


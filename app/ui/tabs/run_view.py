"""The run view: live loss chart, progress, the best eval, log tail, cancel, downloads; rebuilt from the registry.

The page keeps nothing: a timer re-reads the run's rows every tick, and the run id lives in the URL
(``?run=N``), so a reload or another browser shows the same run where it is.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.core import recipe
from app.services import export, merged, monitor, run_table, runs
from app.services.estimate import human_bytes
from app.ui.escape import literal
from app.ui.labels import t

POLL_SECONDS = 1.0

# The address says what the person looks at: ?run=N while the run view is in front, so a reload or a
# shared link opens that run; leaving the run view takes it off, so a reload returns to where they were.
SET_URL_JS = """(run) => { if (run) { const u = new URL(window.location); u.searchParams.set('run', run);
window.history.replaceState(null, '', u); } return []; }"""
# Gradio fires the first tab's select while the page mounts, before the load events read the address:
# clearing then stripped a shared ?run=N before the server saw it (issue 11, item 4). So the address is
# only cleared once the load has placed the page (URL_READY_JS, run after the load's tab choice).
CLEAR_URL_JS = """() => { if (!window.tsUrlReady) return []; const u = new URL(window.location);
u.searchParams.delete('run'); window.history.replaceState(null, '', u); return []; }"""
URL_READY_JS = """() => { window.tsUrlReady = true; return []; }"""

# Point markers for the loss charts, drawn by the browser on the plot's own SVG paths: Gradio's line
# plot has no point option, and a line of one point draws nothing, so a chart with a single loss or
# eval value looked empty for minutes (issue 11, item 7). Every line gets a dot at its first and last
# point; eval lines (a few points each) get one at every point. context-stroke keeps each series' colour.
# The best checkpoint (one point on the eval curve, app.services.monitor.BEST_SERIES) gets a larger ring.
CHART_MARKERS = """<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>
<marker id="ts-point" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="8" markerHeight="8"
 markerUnits="userSpaceOnUse"><circle cx="5" cy="5" r="5" fill="context-stroke"/></marker>
<marker id="ts-best" viewBox="0 0 20 20" refX="10" refY="10" markerWidth="18" markerHeight="18"
 markerUnits="userSpaceOnUse"><circle cx="10" cy="10" r="7.5" fill="none" stroke="context-stroke"
 stroke-width="3"/></marker></defs></svg>
<style>
#run-chart g.mark-line, #runs-chart g.mark-line { clip-path: none; }
#run-chart path[aria-roledescription="line mark"], #runs-chart path[aria-roledescription="line mark"] {
  marker-start: url(#ts-point); marker-end: url(#ts-point); }
#run-chart path[aria-roledescription="line mark"][aria-label$=" eval"],
#runs-chart path[aria-roledescription="line mark"][aria-label$=" eval"] { marker-mid: url(#ts-point); }
#run-chart path[aria-roledescription="line mark"][aria-label$=" best checkpoint"] {
  marker-start: url(#ts-best); marker-end: url(#ts-best); }
</style>"""

# The log box follows its end as lines arrive, unless the person has scrolled up to read (then it
# stays put until they scroll back down). Gradio's own autoscroll re-arms only when its "near the
# bottom" flag changes, so after the first fill the log stopped following (issue 11, item 7). Run
# after each redraw; ``follow`` (switching runs) starts following again.
FOLLOW_LOG_JS = """(follow) => { const t = document.querySelector('#run-log textarea'); if (!t) return [];
if (!t.tsWatched) { t.tsWatched = true; t.tsFollow = true; t.addEventListener('scroll', () => {
  t.tsFollow = t.scrollTop + t.clientHeight >= t.scrollHeight - 8; }, {passive: true}); }
if (follow === true) t.tsFollow = true;
if (t.tsFollow) requestAnimationFrame(() => { t.scrollTop = t.scrollHeight; });
return []; }"""
FOLLOW_LOG_AGAIN_JS = f"() => ({FOLLOW_LOG_JS})(true)"


# What a redraw of the run shows (draw answers for each); ``run.seen`` is the (run id, status, points)
# last drawn, to skip redundant redraws.
DRAWN = ("run.header", "run.progress", "run.best", "run.chart", "run.log", "run.cancel", "run.download",
         "run.download_last", "run.merge", "run.merged", "run.seen")


def run_choices(ctx) -> list[tuple[str, int]]:
    return [(f"#{r.id} {r.name} ({recipe.method_label(r.spec) if r.spec.get('method') else r.method}, "
             f"{r.created_at:%Y-%m-%d %H:%M})", r.id) for r in runs.list_runs(ctx)]


def active_run(ctx) -> int | None:
    """The newest queued/running run (the one a person reopening the studio wants to see)."""
    active = runs.list_runs(ctx, status=["running", "queued", "cancelling"], limit=1)
    return active[0].id if active else None


def linked_run(ctx, raw: str) -> tuple[int | None, str]:
    """The run a ``?run=N`` link names, or None and a message saying why it cannot be shown.

    A deleted run's id must not reach the picker: Gradio refuses a value outside its choices.
    """
    try:
        return runs.get_run(ctx, int(raw)).id, ""
    except (ValueError, runs.RunNotFound):
        return None, f"<div class='ts-error'>{literal(t('run.link_missing', run=raw))}</div>"


def latest_run(ctx) -> int | None:
    newest = runs.list_runs(ctx, limit=1)
    return newest[0].id if newest else None


def build(ctx) -> dict[str, Block]:
    """The tab's components by name: ``run.picker`` (which run), ``DRAWN``, ``run.message``, ``run.timer``
    (the redraw tick) and the buttons."""
    with gr.Row():
        picker = gr.Dropdown([], value=None, label=t("run.pick"), elem_id="run-picker", scale=4)
        refresh = gr.Button(t("run.refresh"), scale=0, size="sm", min_width=100, elem_id="run-refresh")
    header = gr.HTML(t("run.none"), elem_id="run-header")
    # Under the header, where the eye is: cancel status, merge errors, a link to a run that is gone.
    message = gr.Markdown(elem_id="run-message")
    progress = gr.HTML(elem_id="run-progress")
    best = gr.HTML(elem_id="run-best")  # the best eval, whose adapter is kept (marked on the chart)
    # Starts without a frame: Gradio's plot never draws lines into a chart first given an empty one.
    # The title sits outside the plot: a labelled plot block clips its own legend.
    gr.Markdown(f"#### {t('run.loss')}")
    chart = gr.LinePlot(None, x="step", y="loss", color="series", color_title=t("run.loss.legend"),
                        show_label=False, height=320, color_map=monitor.SERIES_COLOURS, elem_id="run-chart")
    log = gr.Textbox(label=t("run.log"), lines=8, max_lines=8, interactive=False, autoscroll=True,
                     elem_id="run-log")
    with gr.Row():
        cancel = gr.Button(t("run.cancel"), variant="stop", elem_id="run-cancel", visible=False)
        download = gr.DownloadButton(t("run.download"), visible=False, elem_id="run-download")
        download_last = gr.DownloadButton(t("run.download_last"), visible=False, elem_id="run-download-last")
        merge = gr.Button(t("run.prepare_merged"), visible=False, elem_id="run-merge")
        merged = gr.DownloadButton(t("run.download_merged"), visible=False, elem_id="run-merged")
    return {"run.picker": picker, "run.refresh": refresh, "run.header": header, "run.message": message,
            "run.progress": progress, "run.best": best, "run.chart": chart, "run.log": log, "run.cancel": cancel,
            "run.download": download, "run.download_last": download_last, "run.merge": merge, "run.merged": merged, "run.timer": gr.Timer(POLL_SECONDS),
            "run.seen": gr.State(None)}


def _header(ctx, run: runs.RunView) -> str:
    data = run_table.dataset_name(ctx, run.spec.get("data", {}).get("dataset", ""), {})
    err = f"<div class='ts-error'>{literal(run.error)}</div>" if run.error else ""
    disk = t("run.disk", size=human_bytes(runs.run_disk_bytes(ctx, run.id)))
    # "resumed from step 40 (attempt 2)": this attempt continued where a stopped one left off.
    resumed = f"<div id='run-resumed'>{literal(run.resumed)}</div>" if run.resumed else ""
    return (f"<h3>#{run.id} {literal(run.name)} <span class='ts-status {literal(run.status)}' id='run-status'>"
            f"{literal(run.status)}</span></h3><div>{literal(run.model)} · data {literal(data)}</div>"
            f"<div id='run-recipe'>{literal(run_table.run_recipe(run))}</div><div id='run-disk'>{disk}</div>{resumed}{err}")


def _progress(p: monitor.Progress) -> str:
    total = p.total_steps or "?"
    tps = f"{p.tokens_per_second:,.0f}" if p.tokens_per_second else "–"
    epoch = f"{p.epoch:.2f}" if p.epoch is not None else "–"
    return (f"<div class='ts-progress'><div style='width:{p.fraction * 100:.1f}%'></div></div>"
            f"<div class='ts-stats'><span id='run-step'>step {p.step} / {total}</span><span>epoch {epoch}</span>"
            f"<span>elapsed {monitor.duration(p.elapsed_seconds)}</span>"
            f"<span>ETA {monitor.duration(p.eta_seconds)}</span><span>{tps} tokens/s</span></div>")


def best_line(snap: monitor.Snapshot) -> str:
    """"Best eval loss 0.8123 at step 40 (kept as the adapter)": the eval the chart marks and what became
    of its adapter; empty while no eval has been ranked."""
    best = snap.best
    if best is None:
        return ""
    value = f"{best.value:.3f}" if best.metric == "accuracy" else f"{best.value:.4f}"
    if snap.run.adapter_path is not None:
        kept = t("run.best.kept")
    elif snap.run.status in ("queued", "running", "cancelling"):
        kept = t("run.best.so_far")
    else:
        kept = ""
    return f"<div class='ts-best'>{t('run.best', metric=best.metric, value=value, step=best.step)}{kept}</div>"


def _nothing(header: str) -> dict[str, Any]:
    hide = gr.update(visible=False)
    return {"run.header": header, "run.progress": "", "run.best": "", "run.chart": None, "run.log": "",
            "run.cancel": hide, "run.download": hide, "run.download_last": hide, "run.merge": hide,
            "run.merged": hide, "run.seen": None}


def draw(ctx, run_id, seen) -> dict[str, Any]:
    """What the tab shows for ``run_id``, for each name of ``DRAWN``; nothing when it is as ``seen`` last."""
    hide = gr.update(visible=False)
    if not run_id:
        return _nothing(t("run.none"))
    try:
        key = (int(run_id), *runs.revision(ctx, int(run_id)))
        if seen == key:
            return {}
        snap = monitor.snapshot(ctx, int(run_id))
    except runs.RunNotFound as exc:
        return _nothing(f"<div class='ts-error'>{literal(exc)}</div>")
    download = download_last = gr.update(visible=False)
    if snap.run.status == "succeeded" and snap.run.adapter_path:
        try:
            download = gr.update(value=str(export.export_adapter_zip(ctx, int(run_id))), visible=True)
            if snap.run.last_adapter_path and snap.run.last_adapter_path != snap.run.adapter_path:
                # the best eval's adapter is the download above; the last step's stays downloadable
                last = export.export_adapter_zip(ctx, int(run_id), last=True)
                download_last = gr.update(value=str(last), visible=True)
        except Exception:
            download = download_last = gr.update(visible=False)
    active = snap.run.status in ("queued", "running")
    frame = snap.frame if len(snap.frame) else None
    done = snap.run.status == "succeeded" and snap.run.adapter_path is not None
    merged_path = merged.merged_zip_path(ctx, int(run_id))
    merged_button = gr.update(value=str(merged_path), visible=True) if merged_path.is_file() else hide
    return {"run.header": _header(ctx, snap.run), "run.progress": _progress(snap.progress),
            "run.best": best_line(snap), "run.chart": frame, "run.log": snap.log,
            "run.cancel": gr.update(visible=active), "run.download": download, "run.download_last": download_last,
            "run.merge": gr.update(visible=done and not merged_path.is_file()), "run.merged": merged_button,
            "run.seen": key}


def prepare_merged(ctx, run_id, progress=None) -> dict[str, Any]:
    """``run.message``, ``run.merge`` (the button) and ``run.merged`` (the download); ``progress``
    (Gradio's) shows each build stage."""
    def report(stage: str, mb: int) -> None:
        if progress is not None:
            progress(merged.STAGES[stage], desc=t(f"merged.status.{stage}", mb=mb))

    try:
        path = merged.export_merged_zip(ctx, int(run_id), report)
    except Exception as exc:
        return {"run.message": f"<div class='ts-error'>{literal(exc)}</div>"}
    return {"run.message": "", "run.merge": gr.update(visible=False),
            "run.merged": gr.update(value=str(path), visible=True)}


def cancel(ctx, run_id) -> str:
    if not run_id:
        return ""
    status = runs.cancel_run(ctx, int(run_id))
    return f"Run #{run_id}: {status}."

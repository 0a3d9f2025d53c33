"""Wizard step 2: upload a file (or pick a demo), see the detected format and mapping, correct it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.core.refs import registered_ref
from app.services import data_preview
from app.ui import uploads
from app.ui.escape import literal
from app.ui.labels import t

MAX_ROLES = 5
FILE_TYPES = [".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt", ".zip"]


# What a person sets on this step (kept in the wizard's draft); ``data.ref`` is the dataset reference
# for the spec ("dataset:3"), set by an upload or a demo pick. (``data.refusal``, why the last upload
# was refused, is not kept: a reloaded page has no upload on screen.)
FIELDS = ("data.bundled", "data.val_fraction", "data.dedupe", "data.max_length", "data.ref")
# The column picked for each role of the data's shape, in the shape's order (app.services.data_preview.roles_for).
ROLES = tuple(f"data.role.{i}" for i in range(MAX_ROLES))
# What a preview shows (render_preview answers for each).
PREVIEW = ("data.status", "data.shape", *ROLES, "data.preview", "data.stats", "data.histogram")


def _safe(call, default):
    try:
        return call()
    except Exception:
        return default


def build() -> dict[str, Block]:
    """The step's components by name: the fields and roles above, what the preview shows, the buttons."""
    bundled_names = _safe(data_preview.bundled_choices, [])
    with gr.Row():
        upload = gr.File(label=t("data.upload"), file_types=FILE_TYPES, type="filepath", elem_id="data-upload",
                         scale=3)
        with gr.Column(scale=2):
            bundled = gr.Dropdown(bundled_names, value=None, label=t("data.bundled"), elem_id="data-bundled")
            val_fraction = gr.Slider(0.0, 0.5, value=0.1, step=0.05, label=t("data.val_fraction"),
                                     elem_id="data-val-fraction")
            dedupe = gr.Checkbox(True, label=t("data.dedupe"), info=t("data.dedupe.info"), elem_id="data-dedupe")
            max_length = gr.Number(512, precision=0, minimum=8, label=t("data.max_length"), elem_id="data-max-length")
    status = gr.Markdown(t("data.empty"), elem_id="data-status")
    shape = gr.Dropdown(_safe(data_preview.shapes, []), value=None, label=t("data.shape"), elem_id="data-shape")
    with gr.Row():
        roles = [gr.Dropdown([], value=None, label=f"field {i + 1}", visible=False, elem_id=f"data-role-{i}")
                 for i in range(MAX_ROLES)]
    preview = gr.Dataframe(label=t("data.preview"), interactive=False, wrap=True, elem_id="data-preview",
                           visible=False)
    with gr.Row():
        stats = gr.Markdown(elem_id="data-stats")
        histogram = gr.Image(label=t("data.lengths"), show_label=False, type="pil", interactive=False, height=240,
                             elem_id="data-histogram", visible=False)
    with gr.Row():
        back = gr.Button(t("back"), elem_id="data-back")
        nxt = gr.Button(t("next"), variant="primary", elem_id="data-next")
    return {"data.upload": upload, "data.bundled": bundled, "data.val_fraction": val_fraction, "data.dedupe": dedupe,
            "data.max_length": max_length, "data.status": status, "data.shape": shape,
            **dict(zip(ROLES, roles, strict=True)), "data.preview": preview, "data.stats": stats,
            "data.histogram": histogram, "data.ref": gr.State(None), "data.refusal": gr.State(None), "data.back": back,
            "data.next": nxt}


def error_box(message: str) -> str:
    return f"<div class='ts-error' id='data-error'>{literal(message)}</div>"


def register(ctx, path: str | None, original_name: str | None = None) -> tuple[str | None, str | None]:
    """An upload -> (registered dataset ref, None) or (None, why it was refused, in the words of
    ``add_dataset``, which ``tunestudio datasets add`` uses too).

    Gradio's temporary copy of the upload is removed either way (``app.ui.uploads``): a stored file
    lives on in the artifacts store, and a refused one is never read again (Next repeats the refusal).
    """
    if not path:
        return None, None
    try:
        view = data_preview.register_upload(ctx, path, original_name or Path(path).name)
    except Exception as exc:
        return None, str(exc)
    finally:
        uploads.discard(path)
    return registered_ref(view.id), None


def uploaded_file(upload: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(path, the person's file name) of an upload as Gradio hands it over unprocessed (its FileData)."""
    if not upload or not upload.get("path"):
        return None, None
    return upload["path"], upload.get("orig_name") or Path(upload["path"]).name


def upload_shown(ref: str | None, refusal: str | None) -> dict[str, Any]:
    """What an upload leaves on the step: ``data.ref``, ``data.refusal`` and ``data.status``."""
    return {"data.ref": ref, "data.refusal": refusal, "data.status": error_box(refusal) if refusal else ""}


def next_from_data(ref: str | None, refusal: str | None) -> tuple[str | None, str | None]:
    """(dataset ref, None) to go on, or (None, an error box saying why Next stays on the data step).

    A file that is on screen but was refused at upload gets that refusal again, in the words of
    the CLI's ``tunestudio datasets add`` (the same ``add_dataset`` refused it), instead of a request
    for a file the person can see they uploaded."""
    if ref:
        return ref, None
    if refusal:
        return None, error_box(refusal)
    return None, error_box(t("data.next.refused", reason=t("data.empty")))


def register_demo(ctx, name: str | None) -> tuple[str | None, str]:
    """Demo dataset -> (registered dataset ref, "") or (None, an error message)."""
    if not name:
        return None, t("data.empty")
    try:
        view = data_preview.register_bundled(ctx, name)
    except Exception as exc:
        return None, error_box(str(exc))
    return registered_ref(view.id), ""


def render_preview(prev: data_preview.DataPreview | None, error: str | None = None,
                   val_fraction: float = 0.1, dedupe: bool = True) -> dict[str, Any]:
    """What the step shows for ``prev`` (or for no data yet), for each name of ``PREVIEW``."""
    if prev is None:
        return {"data.status": error or t("data.empty"), "data.shape": gr.update(value=None),
                **{name: gr.update(visible=False, value=None) for name in ROLES},
                "data.preview": gr.update(value=None, visible=False), "data.stats": "",
                "data.histogram": gr.update(value=None, visible=False)}
    roles = []
    for i in range(MAX_ROLES):
        if i < len(prev.roles):
            role = prev.roles[i]
            roles.append(gr.update(visible=True, label=role, choices=[""] + prev.columns,
                                   value=prev.mapping.get(role, "")))
        else:
            roles.append(gr.update(visible=False, value=None))
    ok = (f"<div class='ts-ok' id='data-ok'><b>{literal(prev.name)}</b>: {prev.rows:,} rows, "
          f"format {literal(prev.fmt)}, detected <b>{literal(prev.shape)}</b> (confidence {prev.confidence:.0%})"
          + (f"; ignored columns: {', '.join(literal(c) for c in prev.ignored_columns)}" if prev.ignored_columns
             else "")
          + "</div>")
    status = ok if prev.problem is None else ok + error_box(prev.problem)
    frame = pd.DataFrame(prev.head).astype(str).map(_short) if prev.head else None
    stats_md = _stats_markdown(data_preview.summary_rows(prev.stats, val_fraction, dedupe))
    hist = _png_image(prev.histogram_png) if prev.histogram_png else None
    return {"data.status": status, "data.shape": gr.update(value=prev.shape), **dict(zip(ROLES, roles, strict=True)),
            "data.preview": gr.update(value=frame, visible=frame is not None), "data.stats": stats_md,
            "data.histogram": gr.update(value=hist, visible=hist is not None)}


def _short(text: str, limit: int = 160) -> str:
    """Long cells cut for the preview so every column stays on screen."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _png_image(png: bytes):
    """The histogram as an image object (Gradio caches it itself; no temp file of ours to leak)."""
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png))


def _stats_markdown(rows: list[tuple[str, str]]) -> str:
    if not rows:
        return ""
    return "\n".join(f"- **{literal(label)}**: {literal(value)}" for label, value in rows)


def mapping_from(shape: str | None, values: Mapping[str, Any]) -> dict[str, str]:
    """The column mapping of ``shape`` from the role fields' values by name (``data.role.<i>`` holds the
    column of the shape's i-th role); roles left empty are left out."""
    if not shape:
        return {}
    return {role: values.get(name) for role, name in zip(data_preview.roles_for(shape), ROLES) if values.get(name)}

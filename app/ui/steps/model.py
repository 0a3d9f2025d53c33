"""Wizard step 1: choose a model (bundled, local folder or hub id); see its shape and a memory estimate."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.core.options import COMPUTE_PRECISIONS, QUANTIZATIONS
from app.services import estimate, model_info
from app.services.estimate import human_count
from app.ui.escape import literal
from app.ui.labels import t

# The choices are the core's own values (app.core.options), each with its label.
PRECISION_CHOICES = [(t(f"model.precision.{value}"), value) for value in COMPUTE_PRECISIONS]
QUANT_CHOICES = [(t(f"model.quantization.{value}"), value) for value in QUANTIZATIONS]


# What a person sets on this step (kept in the wizard's draft).
FIELDS = ("model.bundled", "model.custom", "model.trust", "model.precision", "model.quantization", "model.seq_len",
          "model.batch")


def build() -> dict[str, Block]:
    """The step's components by name: the fields above, plus ``model.state`` (the checked ModelInfo or
    None), ``model.checked`` (whether the person ran the check, whatever it said), ``model.info``,
    ``model.estimate`` and ``model.fit`` (shown), and the buttons."""
    choices = model_info.bundled_choices()
    with gr.Row():
        with gr.Column(scale=3):
            bundled = gr.Dropdown(choices, value=choices[0][1] if choices else None, label=t("model.bundled"),
                                  info=t("model.bundled.info"), elem_id="model-bundled")
            custom = gr.Textbox(value="", label=t("model.custom"), info=t("model.custom.info"),
                                placeholder=t("model.custom.placeholder"), elem_id="model-custom")
            trust = gr.Checkbox(False, label=t("model.trust"), elem_id="model-trust")
            check = gr.Button(t("model.check"), variant="secondary", elem_id="model-check")
            info = gr.Markdown(t("model.info.empty"), elem_id="model-info")
        with gr.Column(scale=2):
            precision = gr.Dropdown(PRECISION_CHOICES, value="auto", label=t("model.precision"),
                                    elem_id="model-precision")
            quantization = gr.Dropdown(QUANT_CHOICES, value="none", label=t("model.quantization"), elem_id="model-quantization",
                                       info=t("model.quantization.info"))
            with gr.Row():
                seq_len = gr.Number(512, precision=0, minimum=8, label=t("model.seq_len"), elem_id="model-seq-len")
                batch = gr.Number(8, precision=0, minimum=1, label=t("model.batch"), elem_id="model-batch")
            estimate = gr.Dataframe(headers=[t("estimate.part"), t("estimate.memory")], value=[],
                                    label=t("model.estimate"), interactive=False, wrap=True, column_widths=["72%", "28%"],
                                    elem_id="model-estimate")
            fit = gr.Markdown("", elem_id="model-fit")
            gr.Markdown(t("estimate.why"), elem_id="model-estimate-why")
    with gr.Row():
        start_over = gr.Button(t("start_over"), variant="secondary", scale=1, elem_id="wizard-start-over")
        nxt = gr.Button(t("next"), variant="primary", scale=4, elem_id="model-next")
    return {"model.bundled": bundled, "model.custom": custom, "model.trust": trust, "model.check": check,
            "model.info": info, "model.precision": precision, "model.quantization": quantization,
            "model.seq_len": seq_len, "model.batch": batch, "model.estimate": estimate, "model.fit": fit,
            "model.state": gr.State(None), "model.checked": gr.State(False), "model.next": nxt,
            "model.start_over": start_over}


def chosen_ref(bundled: str | None, custom: str | None) -> str:
    return (custom or "").strip() or (bundled or "")


def error_box(message: str) -> str:
    return f"<div class='ts-error' id='model-error'>{literal(message)}</div>"


def info_markdown(info: model_info.ModelInfo) -> str:
    """What the check says about the model. The name is what the person typed and the architecture
    comes from the folder's config.json: both shown literally (``<code>``, not backticks, in which
    character references would show as typed)."""
    shape = info.shape
    return "\n".join([
        f"**{literal(info.name)}**" + (f" — {literal(info.description)}" if info.description else ""),
        "",
        f"- Architecture: <code>{literal(info.architecture)}</code> ({literal(info.model_type)})",
        f"- Parameters: {human_count(shape.total_params)} ({shape.total_params:,})",
        f"- Layers × hidden size: {shape.num_layers} × {shape.hidden_size}",
        f"- Task types: {literal(', '.join(info.tasks))}",
    ])


def _describe(bundled: str | None, custom: str | None, trust: bool, models_dir) -> tuple[Any, str | None]:
    """(ModelInfo, None) or (None, the reason the model cannot be read)."""
    try:
        return model_info.describe_model(chosen_ref(bundled, custom), models_dir, trust_remote_code=trust), None
    except Exception as exc:  # shown to the person; the wizard stays usable
        return None, str(exc)


def _checked(info, text: str) -> dict[str, Any]:
    return {"model.state": info, "model.info": text, "model.checked": True}


def check_model(bundled: str | None, custom: str | None, trust: bool, models_dir) -> dict[str, Any]:
    """The check's outcome by name: ``model.state`` (the ModelInfo or None), ``model.info`` (what it says)
    and ``model.checked`` (the check ran: a reload redoes it, whatever it said)."""
    info, problem = _describe(bundled, custom, trust, models_dir)
    return _checked(info, info_markdown(info)) if info is not None else _checked(None, error_box(problem or ""))


def next_from_model(info, bundled: str | None, custom: str | None, trust: bool, models_dir
                    ) -> tuple[dict[str, Any], bool]:
    """(the check's outcome as in :func:`check_model`, may go on). Next re-checks a model that was never
    checked or that the fields no longer name, and refuses to leave step 1 while the check fails, so a
    run is never set up on a model the studio could not read."""
    if info is not None and info.name == chosen_ref(bundled, custom):
        return _checked(info, info_markdown(info)), True
    info, problem = _describe(bundled, custom, trust, models_dir)
    if info is None:
        return _checked(None, error_box(t("model.next.refused", reason=problem))), False
    return _checked(info, info_markdown(info)), True


def estimate_rows(info, trainable: int | None, precision: str, quantization: str, batch, seq_len,
                  peft_type: str | None = None, data_shape: str | None = None,
                  embedded: bool = True) -> dict[str, Any]:
    """``model.estimate`` (table rows) and ``model.fit`` (the fit sentence); ``embedded``: the worker
    trains on this machine."""
    if info is None:
        return {"model.estimate": [], "model.fit": ""}
    est = model_info.estimate_memory(info, int(trainable or 0), estimate.resolve_precision(precision), quantization,
                                     int(batch or 1), int(seq_len or 512), peft_type, data_shape)
    rows = [[t(key), value] for key, value in est.as_rows()]
    return {"model.estimate": rows, "model.fit": fit_text(est.total_bytes, estimate.worker_memory(embedded))}


def fit_text(total_bytes: int, memory: estimate.WorkerMemory | None) -> str:
    verdict = estimate.fit_verdict(total_bytes, memory)
    if memory is None:
        return t("estimate.fit.unknown", need=estimate.gib(total_bytes))
    where = t("estimate.where.gpu", name=literal(memory.name)) if memory.kind == "gpu" else t("estimate.where.ram")
    free = estimate.gib(memory.available_bytes) if memory.available_bytes is not None else "?"
    return t(f"estimate.fit.{verdict}", need=estimate.gib(total_bytes), total=estimate.gib(memory.total_bytes),
             where=where, free=free)

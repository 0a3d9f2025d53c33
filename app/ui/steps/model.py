"""Wizard step 1: choose a model (bundled, local folder or hub id); see its shape and a memory estimate."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.services import estimate, model_info
from app.ui.labels import t

PRECISION_CHOICES = [("Automatic: bf16 where the GPU has it, else fp32", "auto"), ("bf16", "bf16"),
                     ("fp32", "fp32")]
QUANT_CHOICES = [("None (full precision)", "none"), ("int8", "int8"), ("NF4 (4-bit)", "nf4"),
                 ("NF4 + double quantization (QLoRA)", "nf4-dq")]


@dataclass
class ModelStep:
    bundled: gr.Dropdown
    custom: gr.Textbox
    trust: gr.Checkbox
    check: gr.Button
    info: gr.Markdown
    precision: gr.Dropdown
    quantization: gr.Dropdown
    seq_len: gr.Number
    batch: gr.Number
    estimate: gr.Dataframe
    fit: gr.Markdown  # the estimate against the worker's memory, in words
    state: gr.State  # the checked ModelInfo (or None)
    next: gr.Button
    start_over: gr.Button


def build() -> ModelStep:
    choices = model_info.bundled_choices()
    with gr.Row():
        with gr.Column(scale=3):
            bundled = gr.Dropdown(choices, value=choices[0][1] if choices else None, label=t("model.bundled"),
                                  info=t("model.bundled.info"), elem_id="model-bundled")
            custom = gr.Textbox(value="", label=t("model.custom"), info=t("model.custom.info"),
                                placeholder=t("model.custom.placeholder"), elem_id="model-custom")
            trust = gr.Checkbox(False, label=t("model.trust"))
            check = gr.Button(t("model.check"), variant="secondary", elem_id="model-check")
            info = gr.Markdown(t("model.info.empty"), elem_id="model-info")
        with gr.Column(scale=2):
            precision = gr.Dropdown(PRECISION_CHOICES, value="auto", label=t("model.precision"))
            quantization = gr.Dropdown(QUANT_CHOICES, value="none", label=t("model.quantization"), elem_id="model-quantization",
                                       info=t("model.quantization.info"))
            with gr.Row():
                seq_len = gr.Number(512, precision=0, minimum=8, label=t("model.seq_len"))
                batch = gr.Number(8, precision=0, minimum=1, label=t("model.batch"))
            estimate = gr.Dataframe(headers=[t("estimate.part"), t("estimate.memory")], value=[],
                                    label=t("model.estimate"), interactive=False, wrap=True, column_widths=["72%", "28%"],
                                    elem_id="model-estimate")
            fit = gr.Markdown("", elem_id="model-fit")
            gr.Markdown(t("estimate.why"), elem_id="model-estimate-why")
    state = gr.State(None)
    with gr.Row():
        start_over = gr.Button(t("start_over"), variant="secondary", scale=1, elem_id="wizard-start-over")
        nxt = gr.Button(t("next"), variant="primary", scale=4, elem_id="model-next")
    return ModelStep(bundled, custom, trust, check, info, precision, quantization, seq_len, batch, estimate,
                     fit, state, nxt, start_over)


def chosen_ref(bundled: str | None, custom: str | None) -> str:
    return (custom or "").strip() or (bundled or "")


def error_box(message: str) -> str:
    return f"<div class='ts-error' id='model-error'>{html.escape(message)}</div>"


def _describe(bundled: str | None, custom: str | None, trust: bool, models_dir) -> tuple[Any, str | None]:
    """(ModelInfo, None) or (None, the reason the model cannot be read)."""
    try:
        return model_info.describe_model(chosen_ref(bundled, custom), models_dir, trust_remote_code=trust), None
    except Exception as exc:  # shown to the person; the wizard stays usable
        return None, str(exc)


def check_model(bundled: str | None, custom: str | None, trust: bool, models_dir) -> tuple[Any, str]:
    info, problem = _describe(bundled, custom, trust, models_dir)
    return (info, info.markdown()) if info is not None else (None, error_box(problem or ""))


def next_from_model(info, bundled: str | None, custom: str | None, trust: bool, models_dir) -> tuple[Any, str, bool]:
    """(checked model, model-info text, may go on). Next re-checks a model that was never checked or
    that the fields no longer name, and refuses to leave step 1 while the check fails, so a run is
    never set up on a model the studio could not read."""
    if info is not None and info.name == chosen_ref(bundled, custom):
        return info, info.markdown(), True
    info, problem = _describe(bundled, custom, trust, models_dir)
    if info is None:
        return None, error_box(t("model.next.refused", reason=problem)), False
    return info, info.markdown(), True


def estimate_rows(info, trainable: int | None, precision: str, quantization: str, batch, seq_len,
                  peft_type: str | None = None, data_shape: str | None = None,
                  embedded: bool = True) -> tuple[list[list[str]], str]:
    """(table rows, the fit sentence) for [estimate, fit]; ``embedded``: the worker trains on this machine."""
    if info is None:
        return [], ""
    est = model_info.estimate_memory(info, int(trainable or 0), estimate.resolve_precision(precision), quantization,
                                     int(batch or 1), int(seq_len or 512), peft_type, data_shape)
    rows = [[t(key), value] for key, value in est.as_rows()]
    return rows, fit_text(est.total_bytes, estimate.worker_memory(embedded))


def fit_text(total_bytes: int, memory: estimate.WorkerMemory | None) -> str:
    verdict = estimate.fit_verdict(total_bytes, memory)
    if memory is None:
        return t("estimate.fit.unknown", need=estimate.gib(total_bytes))
    where = t("estimate.where.gpu", name=html.escape(memory.name)) if memory.kind == "gpu" else t("estimate.where.ram")
    free = estimate.gib(memory.available_bytes) if memory.available_bytes is not None else "?"
    return t(f"estimate.fit.{verdict}", need=estimate.gib(total_bytes), total=estimate.gib(memory.total_bytes),
             where=where, free=free)

"""Wizard step 1: choose a model (bundled, local folder or hub id); see its shape and a memory estimate."""

from __future__ import annotations

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
    state: gr.State  # the checked ModelInfo (or None)
    next: gr.Button
    start_over: gr.Button


def build() -> ModelStep:
    choices = model_info.bundled_choices()
    with gr.Row():
        with gr.Column(scale=3):
            bundled = gr.Dropdown(choices, value=choices[0][1] if choices else None, label=t("model.bundled"),
                                  info=t("model.bundled.info"), elem_id="model-bundled")
            custom = gr.Textbox(label=t("model.custom"), info=t("model.custom.info"),
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
            estimate = gr.Dataframe(headers=["Part", "Memory"], value=[], label=t("model.estimate"), interactive=False,
                                    elem_id="model-estimate")
    state = gr.State(None)
    with gr.Row():
        start_over = gr.Button(t("start_over"), variant="secondary", scale=1, elem_id="wizard-start-over")
        nxt = gr.Button(t("next"), variant="primary", scale=4, elem_id="model-next")
    return ModelStep(bundled, custom, trust, check, info, precision, quantization, seq_len, batch, estimate,
                     state, nxt, start_over)


def chosen_ref(bundled: str | None, custom: str | None) -> str:
    return (custom or "").strip() or (bundled or "")


def check_model(bundled: str | None, custom: str | None, trust: bool, models_dir) -> tuple[Any, str]:
    try:
        info = model_info.describe_model(chosen_ref(bundled, custom), models_dir, trust_remote_code=trust)
    except Exception as exc:  # shown to the person; the wizard stays usable
        return None, f"<div class='ts-error'>{exc}</div>"
    return info, info.markdown()


def estimate_rows(info, trainable: int | None, precision: str, quantization: str, batch, seq_len):
    if info is None:
        return []
    return model_info.estimate_table(info, int(trainable or 0), estimate.resolve_precision(precision), quantization,
                                     int(batch or 1), int(seq_len or 512))

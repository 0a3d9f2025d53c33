"""Wizard step 4: hyperparameters with presets; advanced fields folded; submit.

The learning rate follows the chosen method (each declares its usual rate): a preset or a method pick
puts the method's rate in the field unless the person typed their own, and a rate far outside the
method's usual range is called out under the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.core.options import COMPILE_CHOICES, HEAD_LEARNING_RATE, SCHEDULERS
from app.services.draft import TRAIN_FIELDS
from app.services.wizard import (
    EARLY_STOPPING_PATIENCE,
    PRESET_KEYS,
    PRESETS,
    check_learning_rate,
    preset_values,
)
from app.ui.labels import t

# The run's training values, named after the spec's fields (``train.learning_rate``).
VALUES = tuple(f"train.{name}" for name in TRAIN_FIELDS)
# What a person sets on this step (kept in the wizard's draft).
FIELDS = ("train.preset", *VALUES)
# What picking a preset rewrites.
PRESET_FIELDS = tuple(f"train.{key}" for key in PRESET_KEYS)


def build(peft_type: str = "LORA") -> dict[str, Block]:
    """The step's components by name: the preset and ``VALUES``, ``train.lr_note`` (the rate's note),
    ``train.rate_method`` (the method whose rate the field holds unless typed over), ``train.yaml`` (the
    spec preview), ``train.message``, the buttons."""
    p = preset_values("balanced", peft_type)
    preset = gr.Radio(list(PRESETS), value="balanced", label=t("train.preset"), info=t("train.preset.info"),
                      elem_id="train-preset")
    name = gr.Textbox(label=t("train.name"), placeholder="my-first-adapter", elem_id="train-name")
    with gr.Row():
        epochs = gr.Number(p["epochs"], minimum=0.01, label=t("train.epochs"), elem_id="train-epochs")
        lr = gr.Number(p["learning_rate"], minimum=0, label=t("train.lr"), elem_id="train-lr")
        batch = gr.Number(p["batch_size"], precision=0, minimum=1, label=t("train.batch"), elem_id="train-batch")
        max_steps = gr.Number(p["max_steps"], precision=0, minimum=0, label=t("train.max_steps"),
                              elem_id="train-max-steps")
    lr_note = gr.Markdown(learning_rate_note(peft_type, p["learning_rate"]), elem_id="train-lr-note")
    # The method whose recommended rate the field holds unless the person typed over it.
    rate_method = gr.State(peft_type)
    with gr.Accordion(t("train.advanced"), open=False):
        with gr.Row():
            grad_accum = gr.Number(1, precision=0, minimum=1, label=t("train.grad_accum"), elem_id="train-grad-accum")
            warmup = gr.Number(0, precision=0, minimum=0, label=t("train.warmup"), elem_id="train-warmup")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="linear", label=t("train.scheduler"),
                                    elem_id="train-scheduler")
            weight_decay = gr.Number(0.0, minimum=0, label=t("train.weight_decay"), elem_id="train-weight-decay")
            head_lr = gr.Number(HEAD_LEARNING_RATE, minimum=0, label=t("train.head_lr"), info=t("train.head_lr.info"),
                                elem_id="train-head-lr")
        with gr.Row():
            eval_every = gr.Number(p["eval_every"], precision=0, minimum=0, label=t("train.eval_every"),
                                   elem_id="train-eval-every")
            checkpoint_every = gr.Number(0, precision=0, minimum=0, label=t("train.checkpoint_every"),
                                         elem_id="train-checkpoint-every")
            seed = gr.Number(42, precision=0, minimum=0, label=t("train.seed"), elem_id="train-seed")
        with gr.Row():
            early_stopping = gr.Checkbox(False, label=t("train.early_stopping"), info=t("train.early_stopping.info"),
                                         elem_id="train-early-stopping")
            patience = gr.Number(EARLY_STOPPING_PATIENCE, precision=0, minimum=1,
                                 label=t("train.early_stopping_patience"), elem_id="train-early-stopping-patience")
        with gr.Row():
            compile_ = gr.Dropdown(list(COMPILE_CHOICES), value="auto", label=t("train.compile"),
                                   info=t("train.compile.info"), elem_id="train-compile")
            checkpointing = gr.Checkbox(False, label=t("train.gradient_checkpointing"),
                                        info=t("train.gradient_checkpointing.info"),
                                        elem_id="train-gradient-checkpointing")
    with gr.Accordion(t("train.yaml"), open=False):
        yaml = gr.Code(language="yaml", interactive=False, lines=12, max_lines=24, elem_id="train-yaml")
    message = gr.Markdown(elem_id="train-message")
    with gr.Row():
        back = gr.Button(t("back"), elem_id="train-back")
        submit = gr.Button(t("train.submit"), variant="primary", elem_id="train-submit")
    values = {"train.name": name, "train.epochs": epochs, "train.learning_rate": lr, "train.batch_size": batch,
              "train.max_steps": max_steps, "train.grad_accum": grad_accum, "train.warmup_steps": warmup,
              "train.scheduler": scheduler, "train.weight_decay": weight_decay, "train.head_learning_rate": head_lr,
              "train.eval_every": eval_every,
              "train.checkpoint_every": checkpoint_every, "train.seed": seed, "train.early_stopping": early_stopping,
              "train.early_stopping_patience": patience, "train.compile": compile_,
              "train.gradient_checkpointing": checkpointing}
    if tuple(values) != VALUES:
        raise RuntimeError("the train step's fields must be app.services.draft.TRAIN_FIELDS")
    return {"train.preset": preset, **values, "train.lr_note": lr_note, "train.rate_method": rate_method,
            "train.yaml": yaml, "train.message": message, "train.back": back, "train.submit": submit}


def training_choices(values: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's training values (``WizardChoices`` fields) from the step's fields by name."""
    out = {name.removeprefix("train."): values[name] for name in VALUES}
    out["max_steps"] = out["max_steps"] or 0  # an empty box: no step limit
    return out


def apply_preset(name: str, peft_type: str, task: str | None = None, train_rows: int | None = None) -> dict[str, Any]:
    """The preset's values by name (``PRESET_FIELDS``), with the chosen method's learning rate, sized for the
    task and the data's training rows where they are known (``app.services.wizard.preset_values``)."""
    return {f"train.{key}": value
            for key, value in preset_values(name, peft_type, task=task, train_rows=train_rows).items()}


def follow_method(peft_type: str | None, lr: Any, previous: str | None) -> dict[str, Any]:
    """``train.learning_rate`` and ``train.rate_method`` (the method now followed) after the method
    changed from ``previous``: the new method's rate when the field still holds the previous method's
    rate, else the person's own rate is kept. Stateless apart from ``previous``, so a restored draft's
    typed rate survives too."""
    if not peft_type or peft_type == previous:
        # No change of method (a repeated change event, late under load): never rewrite the field,
        # or a rate typed meanwhile would be overwritten.
        return {}
    if previous and _same(lr, method_rate(previous)):
        return {"train.learning_rate": method_rate(peft_type), "train.rate_method": peft_type}
    return {"train.rate_method": peft_type}


def method_rate(peft_type: str) -> float:
    return check_learning_rate(peft_type, None).default


def learning_rate_note(peft_type: str | None, lr: Any) -> str:
    """The method's usual range under the field, and a warning when the rate is far outside it."""
    if not peft_type:
        return ""
    check = check_learning_rate(peft_type, _number(lr))
    text = t("train.lr.range", method=check.method, low=_rate(check.low), high=_rate(check.high),
             default=_rate(check.default))
    if check.far_off and _number(lr) > 0:  # 0 or less is refused by the spec check, naming the field
        key = "train.lr.too_high" if check.too_high else "train.lr.too_low"
        text = t(key, lr=_rate(_number(lr)), times=f"{check.off_by:.0f}", method=check.method) + "\n\n" + text
    return text


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _same(a: Any, b: Any) -> bool:
    return math.isclose(_number(a), _number(b), rel_tol=1e-9, abs_tol=0.0)


def _rate(value: float) -> str:
    return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e+")

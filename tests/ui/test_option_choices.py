"""The studio offers exactly the values the core knows (app.core.options), each with a label."""

from __future__ import annotations

import gradio as gr

from app.core.options import COMPUTE_PRECISIONS, QUANTIZATIONS, SCHEDULERS
from app.ui.steps import model as model_step
from app.ui.steps import train as train_step


def values_of(dropdown: gr.Dropdown) -> list[str]:
    return [value for _, value in dropdown.choices]


def test_the_model_and_train_steps_offer_the_cores_values():
    with gr.Blocks():
        model = model_step.build()
        train = train_step.build("LORA")
    assert values_of(model["model.precision"]) == list(COMPUTE_PRECISIONS)
    assert values_of(model["model.quantization"]) == list(QUANTIZATIONS)
    assert values_of(train["train.scheduler"]) == list(SCHEDULERS)
    labels = [label for label, _ in model["model.precision"].choices + model["model.quantization"].choices]
    assert all(labels) and len(set(labels)) == len(labels)  # a readable, distinct label for each value
    assert train["train.scheduler"].value in SCHEDULERS

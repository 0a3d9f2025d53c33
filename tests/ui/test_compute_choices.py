"""The train step's advanced compute options: compile (auto / on / off) and gradient checkpointing, each one
spec field with the spec's own default, kept in the spec preview and brought back from a run's spec."""

from __future__ import annotations

import gradio as gr
import pytest
import yaml

from app.core.options import COMPILE_CHOICES
from app.core.spec import TrainingSpec
from app.services import draft
from app.services.wizard import WizardChoices, build_spec
from app.ui.steps import train as train_step


def choices(**train) -> WizardChoices:
    return WizardChoices(name="x", model="SmolLM2-135M-Instruct", dataset="dataset:1", peft_type="LORA",
                         method_values={}, shape="instruction", **train)


def test_the_train_step_offers_them_with_the_specs_defaults():
    with gr.Blocks():
        train = train_step.build("LORA")
    compile_, checkpointing = train["train.compile"], train["train.gradient_checkpointing"]
    assert [value for _, value in compile_.choices] == list(COMPILE_CHOICES)
    assert COMPILE_CHOICES[compile_.value] == TrainingSpec().compile == "auto"
    assert checkpointing.value is TrainingSpec().gradient_checkpointing is False
    assert {"train.compile", "train.gradient_checkpointing"} <= set(train_step.VALUES)  # kept in drafts


@pytest.mark.parametrize(("choice", "value"), list(COMPILE_CHOICES.items()))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_each_choice_is_one_spec_field_and_comes_back_from_a_runs_spec(choice, value, checkpointing):
    spec = build_spec(choices(compile=choice, gradient_checkpointing=checkpointing))
    assert spec.training.compile == value and type(spec.training.compile) is type(value)
    assert spec.training.gradient_checkpointing is checkpointing
    preview = yaml.safe_load(spec.to_yaml())["training"]  # the train step's spec preview
    assert preview["compile"] == value and preview["gradient_checkpointing"] is checkpointing
    values = draft.from_spec(spec, 3)["values"]
    assert values["train.compile"] == choice and values["train.gradient_checkpointing"] is checkpointing
    again = build_spec(choices(compile=values["train.compile"],
                               gradient_checkpointing=values["train.gradient_checkpointing"]))
    assert again.training == spec.training

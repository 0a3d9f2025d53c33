"""Wizard step 4: hyperparameters with presets; advanced fields folded; submit."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.services.wizard import PRESETS
from app.ui.labels import t


@dataclass
class TrainStep:
    preset: gr.Radio
    name: gr.Textbox
    epochs: gr.Number
    lr: gr.Number
    batch: gr.Number
    max_steps: gr.Number
    grad_accum: gr.Number
    warmup: gr.Number
    scheduler: gr.Dropdown
    weight_decay: gr.Number
    eval_every: gr.Number
    checkpoint_every: gr.Number
    seed: gr.Number
    message: gr.Markdown
    yaml: gr.Code
    back: gr.Button
    submit: gr.Button

    def preset_outputs(self) -> list:
        return [self.epochs, self.lr, self.batch, self.max_steps, self.eval_every]

    def values(self) -> list:
        return [self.name, self.epochs, self.lr, self.batch, self.max_steps, self.grad_accum, self.warmup,
                self.scheduler, self.weight_decay, self.eval_every, self.checkpoint_every, self.seed]


def build() -> TrainStep:
    p = PRESETS["balanced"]
    preset = gr.Radio(list(PRESETS), value="balanced", label=t("train.preset"), info=t("train.preset.info"),
                      elem_id="train-preset")
    name = gr.Textbox(label=t("train.name"), placeholder="my-first-adapter", elem_id="train-name")
    with gr.Row():
        epochs = gr.Number(p["epochs"], minimum=0.01, label=t("train.epochs"), elem_id="train-epochs")
        lr = gr.Number(p["learning_rate"], minimum=0, label=t("train.lr"), elem_id="train-lr")
        batch = gr.Number(p["batch_size"], precision=0, minimum=1, label=t("train.batch"), elem_id="train-batch")
        max_steps = gr.Number(p["max_steps"], precision=0, minimum=0, label=t("train.max_steps"),
                              elem_id="train-max-steps")
    with gr.Accordion(t("train.advanced"), open=False):
        with gr.Row():
            grad_accum = gr.Number(1, precision=0, minimum=1, label=t("train.grad_accum"))
            warmup = gr.Number(0, precision=0, minimum=0, label=t("train.warmup"))
            scheduler = gr.Dropdown(["linear", "cosine", "constant"], value="linear", label=t("train.scheduler"))
            weight_decay = gr.Number(0.0, minimum=0, label=t("train.weight_decay"))
        with gr.Row():
            eval_every = gr.Number(p["eval_every"], precision=0, minimum=0, label=t("train.eval_every"),
                                   elem_id="train-eval-every")
            checkpoint_every = gr.Number(0, precision=0, minimum=0, label=t("train.checkpoint_every"))
            seed = gr.Number(42, precision=0, minimum=0, label=t("train.seed"))
    with gr.Accordion(t("train.yaml"), open=False):
        yaml = gr.Code(language="yaml", interactive=False, lines=12, max_lines=24, elem_id="train-yaml")
    message = gr.Markdown(elem_id="train-message")
    with gr.Row():
        back = gr.Button(t("back"), elem_id="train-back")
        submit = gr.Button(t("train.submit"), variant="primary", elem_id="train-submit")
    return TrainStep(preset, name, epochs, lr, batch, max_steps, grad_accum, warmup, scheduler, weight_decay,
                     eval_every, checkpoint_every, seed, message, yaml, back, submit)


def apply_preset(name: str) -> list:
    p = PRESETS[name]
    return [p["epochs"], p["learning_rate"], p["batch_size"], p["max_steps"], p["eval_every"]]

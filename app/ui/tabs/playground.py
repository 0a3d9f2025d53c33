"""Playground: base and tuned outputs side by side for the same prompt; label probabilities for
classification runs."""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from app.services import playground
from app.ui.labels import t


@dataclass
class PlaygroundTab:
    run: gr.Dropdown
    refresh: gr.Button
    prompt: gr.Textbox
    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    generate: gr.Button
    message: gr.Markdown
    base: gr.Textbox
    tuned: gr.Textbox
    base_labels: gr.Label
    tuned_labels: gr.Label


def build() -> PlaygroundTab:
    with gr.Row():
        run = gr.Dropdown([], value=None, label=t("play.run"), info=t("play.empty"), elem_id="play-run", scale=4)
        refresh = gr.Button(t("run.refresh"), scale=0, size="sm", min_width=100)
    prompt = gr.Textbox(label=t("play.prompt"), placeholder=t("play.prompt.placeholder"), lines=3,
                        elem_id="play-prompt")
    with gr.Row():
        max_new_tokens = gr.Slider(1, 512, value=32, step=1, label=t("play.max_new_tokens"))
        temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label=t("play.temperature"))
        top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label=t("play.top_p"))
    generate = gr.Button(t("play.generate"), variant="primary", elem_id="play-generate")
    message = gr.Markdown(elem_id="play-message")
    with gr.Row():
        base = gr.Textbox(label=t("play.base"), lines=6, interactive=False, elem_id="play-base")
        tuned = gr.Textbox(label=t("play.tuned"), lines=6, interactive=False, elem_id="play-tuned")
    with gr.Row():
        base_labels = gr.Label(label=t("play.base"), visible=False, elem_id="play-base-labels")
        tuned_labels = gr.Label(label=t("play.tuned"), visible=False, elem_id="play-tuned-labels")
    return PlaygroundTab(run, refresh, prompt, max_new_tokens, temperature, top_p, generate, message, base,
                         tuned, base_labels, tuned_labels)


def run_generate(pg: playground.Playground, run_id, prompt, max_new_tokens, temperature, top_p):
    """[message, base, tuned, base_labels, tuned_labels]"""
    hide = gr.update(visible=False)
    if not run_id:
        return [t("play.empty"), "", "", hide, hide]
    try:
        loaded = pg.get(int(run_id))
        if loaded.task == "SEQ_CLS":
            base, tuned = playground.label_probabilities(loaded, prompt)
            return ["", gr.skip(), gr.skip(), gr.update(value=base, visible=True),
                    gr.update(value=tuned, visible=True)]
        out = playground.generate(loaded, prompt, max_new_tokens, temperature, top_p)
    except Exception as exc:
        return [f"<div class='ts-error'>{html.escape(str(exc))}</div>", gr.skip(), gr.skip(), gr.skip(), gr.skip()]
    return ["", out.base, out.tuned, hide, hide]


def show_for_run(ctx, run_id) -> list:
    """[max_new_tokens, temperature, top_p, base, tuned, base_labels, tuned_labels, generate button]."""
    classifier = bool(run_id) and playground.task_of(ctx, int(run_id)) == "SEQ_CLS"
    text = gr.update(visible=not classifier)
    labels = gr.update(visible=classifier, value=None)
    button = gr.update(value=t("play.classify") if classifier else t("play.generate"))
    return [text, text, text, text, text, labels, labels, button]

"""Wizard step 3: every method of the tuner core, each with its own fields, defaults and help.

Built from ``app.services.method_form`` at start-up, so a method added to ``tuners.METHODS`` shows
up here with no UI change. One group of widgets per method; only the chosen one is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.services import method_form
from app.ui.labels import t


@dataclass
class MethodStep:
    choice: gr.Dropdown
    groups: dict[str, gr.Group]
    inputs: list[gr.components.Component]
    keys: list[tuple[str, str]]  # (peft_type, field name) for each of ``inputs``
    summary: gr.Markdown
    count: gr.Markdown
    trainable: gr.State
    back: gr.Button
    next: gr.Button
    summaries: dict[str, str] = field(default_factory=dict)


def _widget(spec: method_form.FieldSpec, peft_type: str) -> gr.components.Component:
    elem_id = f"method-{peft_type.lower()}-{spec.name}"
    value = spec.form_default()
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=value, label=spec.label, info=spec.help, elem_id=elem_id)
    if spec.kind == "bool":
        return gr.Checkbox(bool(value), label=spec.label, info=spec.help, elem_id=elem_id)
    if spec.kind in ("int", "float"):
        return gr.Number(value, precision=0 if spec.kind == "int" else None, label=spec.label, info=spec.help,
                         elem_id=elem_id)
    placeholder = "default for this architecture" if spec.kind == "modules" else None
    return gr.Textbox(value, label=spec.label, info=spec.help, placeholder=placeholder, elem_id=elem_id)


def build() -> MethodStep:
    forms = method_form.all_method_forms()
    choices = method_form.method_choices()
    first = "LORA" if any(f.peft_type == "LORA" for f in forms) else forms[0].peft_type
    choice = gr.Dropdown(choices, value=first, label=t("method.choice"), elem_id="method-choice")
    summaries = {f.peft_type: f.summary for f in forms}
    summary = gr.Markdown(summaries.get(first, ""), elem_id="method-summary")
    groups: dict[str, gr.Group] = {}
    inputs: list[gr.components.Component] = []
    keys: list[tuple[str, str]] = []
    for form in forms:
        with gr.Group(visible=form.peft_type == first) as group:
            basic = [f for f in form.fields if not f.advanced]
            advanced = [f for f in form.fields if f.advanced]
            with gr.Row(equal_height=True):
                for spec in basic:
                    inputs.append(_widget(spec, form.peft_type))
                    keys.append((form.peft_type, spec.name))
            if advanced:
                with gr.Accordion(t("method.advanced"), open=False), gr.Row():
                    for spec in advanced:
                        inputs.append(_widget(spec, form.peft_type))
                        keys.append((form.peft_type, spec.name))
        groups[form.peft_type] = group
    count = gr.Markdown(t("method.count.pending"), elem_id="method-count")
    trainable = gr.State(0)
    with gr.Row():
        back = gr.Button(t("back"), elem_id="method-back")
        nxt = gr.Button(t("next"), variant="primary", elem_id="method-next")
    return MethodStep(choice, groups, inputs, keys, summary, count, trainable, back, nxt, summaries)


def values_for(step: MethodStep, peft_type: str, values: tuple[Any, ...]) -> dict[str, Any]:
    """The chosen method's form values by field name (the other methods' widgets are ignored)."""
    return {name: v for (pt, name), v in zip(step.keys, values) if pt == peft_type}


def show_method(step: MethodStep, peft_type: str) -> list[Any]:
    return [gr.update(visible=pt == peft_type) for pt in step.groups] + [step.summaries.get(peft_type, "")]


def count_text(info, peft_type: str, values: dict[str, Any], task: str) -> tuple[int, str]:
    if info is None:
        return 0, t("method.count.pending")
    try:
        config = method_form.build_config(peft_type, values, task_type=task)
        trainable, total = method_form.count_trainable(info.config, config)
    except Exception as exc:
        return 0, f"<div class='ts-error'>{exc}</div>"
    pct = 100.0 * trainable / total if total else 0.0
    return trainable, (f"**{t('method.count')}: {trainable:,}** of {total:,} ({pct:.3f} %) "
                       f"on {info.name}")

"""Wizard step 3: every method of the tuner core, each with its own fields, defaults and help.

Built from ``app.services.method_form`` at start-up, so a method added to ``tuners.METHODS`` shows
up here with no UI change. One group of widgets per method; only the chosen one is visible.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.services import method_form
from app.ui.labels import method_field_label, t

# Fields per row of the form: three read well at desktop width; Gradio's rows wrap each field onto its
# own line when the page is narrower than three fields' minimum width.
PER_ROW = 3
MIN_WIDTH = 220


@dataclass
class MethodStep:
    choice: gr.Dropdown
    groups: dict[str, gr.Column]
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
    common = dict(label=method_field_label(spec.name), info=spec.help, elem_id=elem_id, min_width=MIN_WIDTH)
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=value, **common)
    if spec.kind == "bool":
        return gr.Checkbox(bool(value), **common)
    if spec.empty_is_default:  # a number box cannot be empty (it shows 0); a text box can
        return gr.Textbox(value, placeholder=t("method.empty"), **common)
    if spec.kind in ("int", "float"):
        return gr.Number(value, precision=0 if spec.kind == "int" else None, **common)
    placeholder = "default for this architecture" if spec.kind == "modules" else None
    return gr.Textbox(value, placeholder=placeholder, **common)


def _grid(specs: list[method_form.FieldSpec], peft_type: str, inputs: list, keys: list) -> None:
    """The fields in rows of ``PER_ROW``: value fields first, then the on/off switches in rows of their own.

    A short last row is padded so its columns line up with the rows above. A checkbox takes no minimum
    width of its own, so each sits in a column that has one; otherwise a narrow window squeezes it beside
    a text field instead of wrapping it onto its own line.
    """
    for group in ([s for s in specs if s.kind != "bool"], [s for s in specs if s.kind == "bool"]):
        for start in range(0, len(group), PER_ROW):
            chunk = group[start:start + PER_ROW]
            with gr.Row(equal_height=False):
                for spec in chunk:
                    if spec.kind == "bool":
                        with gr.Column(min_width=MIN_WIDTH):
                            inputs.append(_widget(spec, peft_type))
                    else:
                        inputs.append(_widget(spec, peft_type))
                    keys.append((peft_type, spec.name))
                for _ in range(PER_ROW - len(chunk)):  # an empty column: wraps away when the window is narrow
                    gr.Column(min_width=MIN_WIDTH)


def build() -> MethodStep:
    forms = method_form.all_method_forms()
    choices = method_form.method_choices()
    first = "LORA" if any(f.peft_type == "LORA" for f in forms) else forms[0].peft_type
    choice = gr.Dropdown(choices, value=first, label=t("method.choice"), elem_id="method-choice")
    summaries = {f.peft_type: f.summary for f in forms}
    summary = gr.Markdown(summaries.get(first, ""), elem_id="method-summary")
    groups: dict[str, gr.Column] = {}
    inputs: list[gr.components.Component] = []
    keys: list[tuple[str, str]] = []
    for form in forms:
        with gr.Column(visible=form.peft_type == first, elem_id=f"method-group-{form.peft_type.lower()}") as group:
            basic = [f for f in form.fields if not f.advanced]
            advanced = [f for f in form.fields if f.advanced]
            _grid(basic, form.peft_type, inputs, keys)
            if advanced:
                with gr.Accordion(t("method.advanced"), open=False):
                    _grid(advanced, form.peft_type, inputs, keys)
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


def count_text(info, peft_type: str, values: dict[str, Any], task: str,
               label_names: list[str] | None = None) -> tuple[int, str]:
    if info is None:
        return 0, t("method.count.pending")
    try:
        config = method_form.build_config(peft_type, values, task_type=task)
        trainable, total = method_form.count_trainable(info.config, config, label_names)
    except Exception as exc:  # the message may quote what the person typed: shown as text, never as HTML
        return 0, f"<div class='ts-error' id='method-error'>{html.escape(str(exc))}</div>"
    pct = 100.0 * trainable / total if total else 0.0
    return trainable, t("method.count.detail", label=t("method.count"), trainable=f"{trainable:,}",
                        total=f"{total:,}", pct=f"{pct:.3f}", method=_method_name(peft_type),
                        model=html.escape(str(info.name)))


def _method_name(peft_type: str) -> str:
    return method_form.describe_method(peft_type).name

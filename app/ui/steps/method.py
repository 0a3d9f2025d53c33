"""Wizard step 3: every method of the tuner core, each with its own fields, defaults and help.

Built from ``app.services.method_form`` at start-up, so a method added to ``tuners.METHODS`` shows
up here with no UI change. One group of widgets per method; only the chosen one is visible. Each
field is named ``method.<PEFT_TYPE>.<field>`` (``method.LORA.r``), its group ``method.group.<PEFT_TYPE>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.services import method_form
from app.ui.escape import literal
from app.ui.labels import method_field_label, t

# Fields per row of the form: three read well at desktop width; Gradio's rows wrap each field onto its
# own line when the page is narrower than three fields' minimum width.
PER_ROW = 3
MIN_WIDTH = 220


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


def field_name(peft_type: str, name: str) -> str:
    return f"method.{peft_type}.{name}"


def form_fields() -> list[str]:
    """Every method's fields by name (what the trainable count and the spec read)."""
    return [field_name(form.peft_type, spec.name) for form in method_form.all_method_forms() for spec in form.fields]


def fields() -> list[str]:
    """What a person sets on this step (kept in the wizard's draft): the method and every method's fields."""
    return ["method.choice", *form_fields()]


def _grid(specs: list[method_form.FieldSpec], peft_type: str, named: dict[str, Block]) -> None:
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
                            named[field_name(peft_type, spec.name)] = _widget(spec, peft_type)
                    else:
                        named[field_name(peft_type, spec.name)] = _widget(spec, peft_type)
                for _ in range(PER_ROW - len(chunk)):  # an empty column: wraps away when the window is narrow
                    gr.Column(min_width=MIN_WIDTH)


def build() -> dict[str, Block]:
    """The step's components by name: ``method.choice``, each method's group and fields (above),
    ``method.summary``, ``method.count`` and ``method.trainable`` (the count's number), the buttons."""
    forms = method_form.all_method_forms()
    choices = method_form.method_choices()
    first = "LORA" if any(f.peft_type == "LORA" for f in forms) else forms[0].peft_type
    named: dict[str, Block] = {"method.choice": gr.Dropdown(choices, value=first, label=t("method.choice"),
                                                            elem_id="method-choice")}
    named["method.summary"] = gr.Markdown(method_form.describe_method(first).summary, elem_id="method-summary")
    for form in forms:
        with gr.Column(visible=form.peft_type == first, elem_id=f"method-group-{form.peft_type.lower()}") as group:
            basic = [f for f in form.fields if not f.advanced]
            advanced = [f for f in form.fields if f.advanced]
            _grid(basic, form.peft_type, named)
            if advanced:
                with gr.Accordion(t("method.advanced"), open=False):
                    _grid(advanced, form.peft_type, named)
        named[f"method.group.{form.peft_type}"] = group
    named["method.count"] = gr.Markdown(t("method.count.pending"), elem_id="method-count")
    named["method.trainable"] = gr.State(0)
    with gr.Row():
        named["method.back"] = gr.Button(t("back"), elem_id="method-back")
        named["method.next"] = gr.Button(t("next"), variant="primary", elem_id="method-next")
    return named


def values_for(peft_type: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen method's form values by field name, from values by component name (the other
    methods' fields are ignored)."""
    prefix = field_name(peft_type, "")
    return {name[len(prefix):]: v for name, v in values.items() if name.startswith(prefix)}


def show_method(peft_type: str) -> dict[str, Any]:
    """Only the chosen method's group visible, and its summary."""
    return {**{f"method.group.{pt}": gr.update(visible=pt == peft_type) for _, pt in method_form.method_choices()},
            "method.summary": method_form.describe_method(peft_type).summary if peft_type else ""}


def count_text(info, peft_type: str, values: dict[str, Any], task: str,
               label_names: list[str] | None = None) -> dict[str, Any]:
    """``method.trainable`` (the number) and ``method.count`` (the line that says it)."""
    if info is None:
        return {"method.trainable": 0, "method.count": t("method.count.pending")}
    try:
        config = method_form.build_config(peft_type, values, task_type=task)
        trainable, total = method_form.count_trainable(info.config, config, label_names)
    except Exception as exc:  # the message may quote what the person typed: shown as text, never as HTML
        return {"method.trainable": 0,
                "method.count": f"<div class='ts-error' id='method-error'>{literal(exc)}</div>"}
    pct = 100.0 * trainable / total if total else 0.0
    return {"method.trainable": trainable,
            "method.count": t("method.count.detail", label=t("method.count"), trainable=f"{trainable:,}",
                              total=f"{total:,}", pct=f"{pct:.3f}", method=_method_name(peft_type),
                              model=literal(info.name))}


def _method_name(peft_type: str) -> str:
    return method_form.describe_method(peft_type).name

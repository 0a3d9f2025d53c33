"""Describe every tuner method's config as form fields, parse the form back, count trainable params.

The method step is generic: it reads ``tuners.METHODS[...].config_cls`` (a dataclass whose fields
carry ``metadata["help"]``), so a method added to the core appears in the studio with its fields,
defaults and help without touching the UI. Values come back from the browser as strings/numbers/
bools and are parsed here, at the edge, into a validated config; errors name the field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

import tuners
from tuners.config import AdapterConfig, ConfigError

# Set by the studio from the chosen model and data, never typed by a person.
HIDDEN_FIELDS = frozenset({"task_type", "base_model_name_or_path", "modules_to_save"})
# Shown folded under "Advanced" whatever their kind.
ADVANCED_FIELDS = frozenset({"exclude_modules", "fan_in_fan_out", "init_lora_weights", "layers_to_transform",
                             "layers_pattern", "rank_pattern", "alpha_pattern"})

KINDS = ("int", "float", "bool", "text", "modules", "json")

# Fields of the shared AdapterConfig base carry no help of their own.
BASE_HELP = {
    "target_modules": "Layers to adapt: names (q_proj, v_proj), 'attention', 'all-linear' or a regex; "
    "empty = the method's default for this architecture.",
    "exclude_modules": "Layers to leave alone even if they match: names or a regex.",
}


def plain_help(text: str) -> str:
    """Help text as a person reads it: the form shows it as plain text, so Markdown code quoting
    (`name`, ``name``) would show its backticks; a quoted name keeps single quotes instead."""
    return re.sub(r"`+([^`]*)`+", r"'\1'", text or "").strip()


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    default: Any
    help: str
    optional: bool
    advanced: bool
    choices: tuple[Any, ...] | None = None

    @property
    def empty_is_default(self) -> bool:
        """A number the person may leave empty, meaning "let the method work it out" (prefix tuning's
        token_dim, AdaLoRA's total_step, the adapter's bottleneck_size). Gradio's number box shows and
        sends 0 for an empty box, and none of these fields accepts 0, so 0 is read as empty (and the
        studio shows these fields as text boxes, which can be empty)."""
        return self.optional and self.default is None and self.kind in ("int", "float")

    def form_default(self) -> Any:
        return self.form_value(self.default)

    def form_value(self, value: Any) -> Any:
        """A config value as the form widget shows it (text boxes hold text)."""
        if self.kind == "modules":
            return modules_to_text(value)
        if self.kind == "json":
            return "" if value is None else json.dumps(value)
        if self.empty_is_default:
            return "" if value is None else str(value)
        if self.kind in ("text", "int", "float") and value is None:
            return None if self.kind != "text" else ""
        return value


@dataclass(frozen=True)
class MethodForm:
    peft_type: str
    name: str
    family: str
    summary: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def _kind(type_text: str) -> tuple[str, bool]:
    parts = [p.strip() for p in str(type_text).replace("typing.", "").split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    if any(p.startswith("list[str]") for p in parts) and "str" in parts:
        return "modules", optional
    if len(parts) == 1:
        base = parts[0]
        if base in ("int", "float", "bool"):
            return base, optional
        if base == "str":
            return "text", optional
    return "json", optional


def suggested_targets(peft_type: str) -> str | None:
    """The targets the form starts with: the method's declared default (``Method.with_defaults`` is
    the one rule the form and a run spec share), so a new user can go straight on."""
    return tuners.method_for(peft_type).default_targets


def describe_method(peft_type: str) -> MethodForm:
    method = tuners.method_for(peft_type)
    specs = []
    for f in dataclasses.fields(method.config_cls):
        if f.name in HIDDEN_FIELDS or not f.init:
            continue
        kind, optional = _kind(f.type)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if f.name == "target_modules" and default is None:
            default = suggested_targets(peft_type)
        if default is None:
            optional = True
        choices = f.metadata.get("choices")
        specs.append(
            FieldSpec(
                name=f.name,
                kind=kind,
                default=default,
                help=plain_help(f.metadata.get("help", "") or BASE_HELP.get(f.name, "")),
                optional=optional,
                advanced=f.name in ADVANCED_FIELDS or kind == "json",
                choices=tuple(choices) if choices else None,
            )
        )
    return MethodForm(
        peft_type=method.peft_type,
        name=method.name,
        family=method.family,
        summary=method.summary,
        fields=tuple(specs),
    )


def all_method_forms() -> list[MethodForm]:
    """Every method of the core, in catalogue order (LoRA first where present)."""
    return [describe_method(t) for t in tuners.METHODS]


def method_choices() -> list[tuple[str, str]]:
    """(label, peft_type) pairs for a dropdown."""
    out = []
    for t, m in tuners.METHODS.items():
        out.append((f"{m.name} ({m.family})" if m.family else m.name, t))
    return out


def modules_to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return ", ".join(value)


def parse_value(spec: FieldSpec, raw: Any) -> Any:
    """One form value to the config's type; raises ConfigError naming the field."""
    name = spec.name
    if spec.empty_is_default and not isinstance(raw, bool) and _is_zero(raw):
        raw = None
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        if spec.optional:
            return None
        if spec.kind in ("text",):
            return ""
        raise ConfigError(f"{name}: a value is required")
    try:
        if spec.kind == "int":
            number = float(raw)
            if number != int(number):
                raise ValueError
            return int(number)
        if spec.kind == "float":
            return float(raw)
        if spec.kind == "bool":
            if isinstance(raw, str):
                return raw.strip().lower() in ("1", "true", "yes", "on")
            return bool(raw)
        if spec.kind == "text":
            return str(raw)
        if spec.kind == "modules":
            text = str(raw).strip()
            if "," in text or " " in text:
                return [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
            return text
        return json.loads(raw) if isinstance(raw, str) else raw
    except (TypeError, ValueError) as exc:
        expected = {"int": "a whole number", "float": "a number", "json": "JSON (e.g. {} or [1, 2])"}
        raise ConfigError(f"{name}: expected {expected.get(spec.kind, spec.kind)}, got {raw!r}") from exc


def _is_zero(raw: Any) -> bool:
    try:
        return float(raw) == 0
    except (TypeError, ValueError):
        return False


def build_config(peft_type: str, values: dict[str, Any], task_type: str | None = "CAUSAL_LM") -> AdapterConfig:
    """The validated config for the form's values (missing names keep their defaults)."""
    form = describe_method(peft_type)
    kwargs: dict[str, Any] = {}
    for spec in form.fields:
        if spec.name in values:
            kwargs[spec.name] = parse_value(spec, values[spec.name])
    method = tuners.method_for(peft_type)
    kwargs = method.with_defaults(kwargs)
    try:
        config = method.config_cls(task_type=task_type, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{peft_type}: {exc}") from exc
    config.validate()
    return config


def config_values(config: AdapterConfig) -> dict[str, Any]:
    """The config's fields as plain values (for a RunSpec's ``method`` section).

    A field left empty whose default is empty is not written at all: the spec then reads as what the
    person chose, and loading it gives the same config (a missing key takes the field's default).
    """
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is None}
    out = {}
    for f in describe_method(config.peft_type).fields:
        value = getattr(config, f.name)
        if value is None and f.name in defaults:
            continue
        out[f.name] = value
    return out


def meta_model(model_config: Any, task_type: str = "CAUSAL_LM", label_names: list[str] | None = None):
    """The model built on the meta device: its structure and parameter shapes, no memory, no weights.

    ``label_names`` sizes a classification head as the engine does (``app.core.models.classification_head``).
    """
    import copy

    import torch
    import transformers

    classes = {
        "CAUSAL_LM": transformers.AutoModelForCausalLM,
        "SEQ_CLS": transformers.AutoModelForSequenceClassification,
        "SEQ_2_SEQ_LM": transformers.AutoModelForSeq2SeqLM,
        "TOKEN_CLS": transformers.AutoModelForTokenClassification,
        "QUESTION_ANS": transformers.AutoModelForQuestionAnswering,
        "FEATURE_EXTRACTION": transformers.AutoModel,
    }
    cls = classes.get(task_type, transformers.AutoModel)
    model_config = copy.deepcopy(model_config)
    if task_type == "SEQ_CLS" and label_names:
        from app.core.models import classification_head

        for key, value in classification_head(label_names).items():
            setattr(model_config, key, value)
    with torch.device("meta"):
        model = cls.from_config(model_config)
    return model


def count_trainable(model_config: Any, config: AdapterConfig, label_names: list[str] | None = None) -> tuple[int, int]:
    """(trainable, total) for ``config`` applied to a meta-device copy of the model; a classifier's
    head sized to ``label_names`` (the data's classes), as the run will size it."""
    model = meta_model(model_config, config.task_type or "CAUSAL_LM", label_names)
    tuned = tuners.apply(model, config.for_run(100))
    return tuned.trainable_parameters()

"""The method step's form is generic over tuners.METHODS: fields, defaults, help, parsing."""

import dataclasses
import re

import pytest

import tuners
from app.services import method_form
from tuners.config import ConfigError


@pytest.mark.parametrize("peft_type", list(tuners.METHODS))
def test_every_method_field_with_a_default_is_described_with_help(peft_type):
    form = method_form.describe_method(peft_type)
    cls = tuners.METHODS[peft_type].config_cls
    names = {f.name for f in dataclasses.fields(cls)} - method_form.HIDDEN_FIELDS
    assert {f.name for f in form.fields} == names
    for spec in form.fields:
        assert spec.kind in method_form.KINDS
        assert spec.help, f"{peft_type}.{spec.name} has no help text"


@pytest.mark.parametrize("peft_type", list(tuners.METHODS))
def test_form_defaults_parse_back_to_the_dataclass_defaults(peft_type):
    form = method_form.describe_method(peft_type)
    values = {f.name: f.form_default() for f in form.fields}
    default = tuners.METHODS[peft_type].config_cls(task_type="CAUSAL_LM")
    if default.target_modules is None:
        default = default.replace(target_modules=method_form.suggested_targets(peft_type))
    try:
        default.validate()
    except ConfigError as exc:  # a field with no usable default (AdaLoRA's total_step): same message
        with pytest.raises(ConfigError, match=re.escape(str(exc))):
            method_form.build_config(peft_type, values)
        return
    assert method_form.build_config(peft_type, values) == default


def test_lora_starts_with_attention_targets_so_defaults_apply():
    assert method_form.describe_method("LORA").field("target_modules").form_default() == "attention"
    assert method_form.suggested_targets("FULL") is None


def test_lora_fields_have_the_right_kinds_and_defaults():
    form = method_form.describe_method("LORA")
    assert form.field("r").kind == "int" and form.field("r").default == 8
    assert form.field("lora_dropout").kind == "float"
    assert form.field("use_dora").kind == "bool"
    assert form.field("target_modules").kind == "modules"
    assert form.field("rank_pattern").advanced


def test_module_lists_and_shorthands_parse():
    spec = method_form.describe_method("LORA").field("target_modules")
    assert method_form.parse_value(spec, "q_proj, v_proj") == ["q_proj", "v_proj"]
    assert method_form.parse_value(spec, "all-linear") == "all-linear"
    assert method_form.parse_value(spec, "") is None


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="^r: expected a whole number"):
        method_form.build_config("LORA", {"r": "eight"})
    with pytest.raises(ConfigError, match="^r: must be a positive integer"):
        method_form.build_config("LORA", {"r": "0"})
    with pytest.raises(ConfigError, match="^rank_pattern: expected JSON"):
        method_form.build_config("LORA", {"rank_pattern": "{oops"})


def test_method_choices_cover_every_method():
    assert [t for _, t in method_form.method_choices()] == list(tuners.METHODS)

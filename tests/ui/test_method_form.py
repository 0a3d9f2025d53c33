"""The method step's form is generic over tuners.METHODS: fields, defaults, help, parsing."""

import dataclasses
import re

import pytest

import tuners
from app.services import method_form
from app.ui.labels import LABELS, method_field_label
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


# --- issue 11: empty optional numbers, human labels, fixed choices, plain help -----------------------

def _empty_number_fields():
    for peft_type in tuners.METHODS:
        for spec in method_form.describe_method(peft_type).fields:
            if spec.empty_is_default:
                yield peft_type, spec.name


@pytest.mark.parametrize(("peft_type", "name"), list(_empty_number_fields()))
@pytest.mark.parametrize("empty", [0, 0.0, None, "", "0"])
def test_an_optional_number_left_empty_is_absent_from_the_spec(peft_type, name, empty):
    """Gradio's number box sends 0 (or None) for an empty box; the field must end up unset, not 0."""
    values = {f.name: f.form_default() for f in method_form.describe_method(peft_type).fields}
    values[name] = empty
    if peft_type == "ADALORA" and name != "total_step":
        values["total_step"] = 100
    config = method_form.build_config(peft_type, values)
    assert getattr(config, name) is None
    assert name not in method_form.config_values(config)


def test_the_three_methods_of_the_report_build_from_browser_values():
    """What the browser sent for prefix tuning, AdaLoRA and the bottleneck adapter left untouched."""
    for peft_type, name in (("PREFIX_TUNING", "token_dim"), ("ADALORA", "total_step"),
                            ("BOTTLENECK", "bottleneck_size")):
        form = method_form.describe_method(peft_type)
        values = {f.name: (0 if f.empty_is_default else f.form_default()) for f in form.fields}
        section = method_form.config_values(method_form.build_config(peft_type, values))
        assert name not in section
        assert all(form.field(k).default is not None for k in section)


def test_a_number_given_is_kept_and_a_bad_one_is_still_refused():
    assert method_form.build_config("BOTTLENECK", {"bottleneck_size": 4}).bottleneck_size == 4
    with pytest.raises(ConfigError, match="^bottleneck_size: must be a positive integer"):
        method_form.build_config("BOTTLENECK", {"bottleneck_size": -3})
    with pytest.raises(ConfigError, match="^r: must be a positive integer"):
        method_form.build_config("LORA", {"r": 0})  # not optional: 0 is not read as empty


def test_spec_section_keeps_defaults_that_are_values():
    section = method_form.config_values(method_form.build_config("PREFIX_TUNING", {}))
    assert section == {"num_virtual_tokens": 20, "prefix_projection": False}


@pytest.mark.parametrize("peft_type", list(tuners.METHODS))
def test_every_field_of_every_method_has_a_human_label(peft_type):
    for spec in method_form.describe_method(peft_type).fields:
        key = f"method.field.{spec.name}"
        assert key in LABELS, f"{peft_type}.{spec.name} has no label in app/ui/labels.py ({key})"
        assert "_" not in LABELS[key] and LABELS[key][0].isupper()


def test_a_field_without_a_label_still_reads_as_words():
    assert method_field_label("use_rslora") == "Rank-stabilised LoRA (rsLoRA)"
    assert method_field_label("some_new_field") == "Some new field"


@pytest.mark.parametrize(("peft_type", "name"), [
    ("LORA", "bias"), ("BOTTLENECK", "variant"), ("BOTTLENECK", "non_linearity"), ("UNIPELT", "non_linearity"),
    ("SSF", "placement"), ("BITFIT", "bias_kinds"), ("PROMPT_TUNING", "prompt_tuning_init"),
    ("P_TUNING", "encoder_reparameterization_type"),
])
def test_fields_with_fixed_choices_offer_exactly_what_the_method_accepts(peft_type, name):
    spec = method_form.describe_method(peft_type).field(name)
    assert spec.choices and spec.default in spec.choices
    values = {"total_step": 100} if peft_type == "ADALORA" else {}
    extra = {"prompt_tuning_init_text": "hello", "tokenizer_name_or_path": "tok"} if peft_type == "PROMPT_TUNING" else {}
    for choice in spec.choices:
        if peft_type == "BOTTLENECK" and name == "variant" and choice == "parallel":
            continue
        method_form.build_config(peft_type, {**values, **extra, name: choice})
    with pytest.raises(ConfigError, match=f"^{name}: must be one of"):
        method_form.build_config(peft_type, {**values, name: "not-a-choice"})


def test_every_text_field_refusing_free_text_offers_choices():
    """A str field whose validator refuses arbitrary text must declare its choices (else it is free text
    that fails only at validation)."""
    for peft_type in tuners.METHODS:
        for spec in method_form.describe_method(peft_type).fields:
            if spec.kind != "text" or spec.choices or spec.name == "target_modules":
                continue
            values = {"total_step": 100} if peft_type == "ADALORA" else {}
            try:
                method_form.build_config(peft_type, {**values, spec.name: "zz-free-text"})
            except ConfigError as exc:
                assert not str(exc).startswith(f"{spec.name}: must be one of"), (peft_type, spec.name)


def test_help_is_plain_text_without_markdown_quotes():
    assert method_form.plain_help("Use `attention` or ``all-linear``.") == "Use 'attention' or 'all-linear'."
    for peft_type in tuners.METHODS:
        for spec in method_form.describe_method(peft_type).fields:
            assert "`" not in spec.help

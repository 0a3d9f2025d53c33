from __future__ import annotations

import pytest

from app.registry.spec import RunSpec, SpecError

GOOD = """\
name: tiny
model: {name: SmolLM2-135M-Instruct}
data: {dataset: pairs.csv, max_length: 64}
method: {peft_type: LORA, r: 4, lora_alpha: 8, target_modules: attention}
training:
  learning_rate: 2e-4
  scheduler: cosine
"""


def test_a_yaml_spec_round_trips_through_dump_and_load():
    spec = RunSpec.from_yaml(GOOD)
    again = RunSpec.from_yaml(spec.to_yaml())
    assert again == spec
    assert spec.training.learning_rate == pytest.approx(2e-4)
    assert spec.task == "CAUSAL_LM"
    assert spec.adapter_config_dict()["task_type"] == "CAUSAL_LM"


@pytest.mark.parametrize(
    ("edit", "path", "line"),
    [
        (("method: {peft_type: LORA, r: 4, lora_alpha: 8, target_modules: attention}", "method: {peft_type: NOPE}"),
         "method.peft_type", 4),
        (("r: 4", "r: -3"), "method.r", 4),
        (("max_length: 64", "max_length: 2"), "data.max_length", 3),
        (("scheduler: cosine", "scheduler: wavy"), "training.scheduler", 7),
        (("learning_rate: 2e-4", "learning_rate: fast"), "training.learning_rate", 6),
        (("model: {name: SmolLM2-135M-Instruct}", "model: {name: /no/such/model}"), "model.name", 2),
        (("data: {", "data: {colour: red, "), "data.colour", 3),
    ],
)
def test_a_bad_field_is_named_with_its_path_and_line(edit, path, line):
    with pytest.raises(SpecError) as err:
        RunSpec.from_yaml(GOOD.replace(*edit), source="spec.yaml")
    assert err.value.path == path
    assert err.value.where == f"spec.yaml, line {line}"
    assert str(err.value).startswith(f"spec.yaml, line {line}: {path}: ")


def test_unknown_method_lists_the_known_ones():
    import tuners

    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"model": "m", "data": {"dataset": "x"}, "method": {"peft_type": "NOPE"}})
    for known in tuners.METHODS:
        assert known in str(err.value)


def test_missing_sections_and_broken_yaml_are_reported():
    with pytest.raises(SpecError, match="method: missing"):
        RunSpec.from_dict({"model": "m", "data": {"dataset": "x"}})
    with pytest.raises(SpecError, match=r"s.yaml, line \d+, column \d+: not valid YAML"):
        RunSpec.from_yaml("name: x\nmodel: [unclosed\n", source="s.yaml")


def test_a_quantized_base_with_a_method_that_trains_base_weights_is_refused_up_front():
    spec = {"model": {"name": "m", "precision": "nf4"}, "data": {"dataset": "x"}, "method": {"peft_type": "FULL"}}
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict(spec)
    assert err.value.path == "model.precision"
    assert "Full fine-tuning" in str(err.value)

"""The wizard's choices become the same RunSpec the CLI reads (YAML round trip included)."""

import pytest

from app.registry.spec import RunSpec, SpecError
from app.services.wizard import PRESETS, WizardChoices, build_spec, task_for
from tuners.config import ConfigError


def choices(**kw):
    base = dict(name="demo", model="SmolLM2-135M-Instruct", dataset="dataset:1", peft_type="LORA",
                method_values={"r": "4", "target_modules": "q_proj, v_proj"}, shape="instruction",
                mapping={"instruction": "instruction", "input": "", "output": "output"})
    base.update(kw)
    return WizardChoices(**base)


def test_spec_carries_every_choice_and_round_trips_through_yaml():
    spec = build_spec(choices(quantization="nf4-dq", precision="fp32", epochs=3, learning_rate=1e-4, max_steps=0,
                              dedupe=False))
    assert spec.training.bf16 is False and spec.data.dedupe is False
    assert build_spec(choices()).data.dedupe is True
    assert spec.model.precision == "nf4" and spec.model.double_quant is True
    assert spec.method["peft_type"] == "LORA" and spec.method["r"] == 4
    assert spec.method["target_modules"] == ["q_proj", "v_proj"]
    assert spec.data.mapping == {"instruction": "instruction", "output": "output"}
    assert spec.training.max_steps is None and spec.training.epochs == 3.0
    again = RunSpec.from_yaml(spec.to_yaml())
    assert again.to_dict() == spec.to_dict()


def test_classification_data_trains_a_sequence_classifier():
    spec = build_spec(choices(shape="classification", mapping={"text": "text", "label": "label"}))
    assert spec.model.task == "SEQ_CLS" and spec.adapter_config_dict()["task_type"] == "SEQ_CLS"
    assert task_for("chat", ("SEQ_2_SEQ_LM",)) == "SEQ_2_SEQ_LM"


def test_default_name_names_method_and_model():
    assert build_spec(choices(name="  ")).name == "lora-SmolLM2-135M-Instruct"


def test_bad_method_value_and_bad_training_value_name_their_field():
    with pytest.raises(ConfigError, match="^r:"):
        build_spec(choices(method_values={"r": "-1"}))
    with pytest.raises(SpecError, match="training.batch_size"):
        build_spec(choices(batch_size=0))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_builds_a_valid_spec(preset):
    p = PRESETS[preset]
    spec = build_spec(choices(epochs=p["epochs"], learning_rate=p["learning_rate"], batch_size=p["batch_size"],
                              max_steps=p["max_steps"], eval_every=p["eval_every"]))
    assert spec.training.learning_rate == p["learning_rate"]

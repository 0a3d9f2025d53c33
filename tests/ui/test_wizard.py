"""The wizard's choices become the same RunSpec the CLI reads (YAML round trip included)."""

import pytest

import tuners
from app.core.spec import RunSpec, SpecError
from app.services.wizard import (
    PRESET_KEYS,
    PRESETS,
    WizardChoices,
    build_spec,
    check_learning_rate,
    preset_values,
    task_for,
)
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
@pytest.mark.parametrize(("peft_type", "method_values"), [("LORA", {"r": "4"}), ("IA3", {}), ("PROMPT_TUNING", {})])
def test_every_preset_builds_a_valid_spec_at_the_methods_learning_rate(preset, peft_type, method_values):
    for task, rows in ((None, None), ("SEQ_CLS", 880), ("CAUSAL_LM", 12)):
        p = preset_values(preset, peft_type, task=task, train_rows=rows)
        spec = build_spec(choices(peft_type=peft_type, method_values=method_values, epochs=p["epochs"],
                                  learning_rate=p["learning_rate"], batch_size=p["batch_size"],
                                  max_steps=p["max_steps"], eval_every=p["eval_every"]))
        assert spec.training.learning_rate == tuners.METHODS[peft_type].learning_rate
        assert spec.training.batch_size == PRESETS[preset].batch_size
        assert set(p) == set(PRESET_KEYS)


def test_presets_scale_length_and_batch_and_leave_the_learning_rate_to_the_method():
    assert all(not hasattr(p, "learning_rate") for p in PRESETS.values())
    rates = {t: preset_values("quick", t)["learning_rate"] for t in tuners.METHODS}
    assert rates["IA3"] >= 10 * rates["LORA"] and rates["PROMPT_TUNING"] > rates["IA3"]
    assert rates["FULL"] < rates["LORA"]


def test_the_quick_preset_is_sized_by_the_data_and_the_task():
    quick = PRESETS["quick"]
    # Before the data is known: its fewest steps.
    assert preset_values("quick", "LORA")["max_steps"] == quick.min_steps == 30
    # The drug-review demo (880 training rows, batch 8): three passes for a classifier, capped at 300 steps;
    # one for a language model (110 steps); 30 of batch 4 (its old size) saw 120 reviews and learned the prior.
    cls = preset_values("quick", "LORA", task="SEQ_CLS", train_rows=880)
    causal = preset_values("quick", "LORA", task="CAUSAL_LM", train_rows=880)
    assert (cls["max_steps"], cls["batch_size"]) == (300, 8) and causal["max_steps"] == 110
    assert (cls["epochs"], causal["epochs"]) == (3.0, 1.0)  # the Epochs field says what the steps aim at
    assert preset_values("quick", "LORA", task="SEQ_CLS", train_rows=400)["max_steps"] == 150  # 3 × 400 / 8
    assert preset_values("quick", "LORA", task="SEQ_CLS", train_rows=10**6)["max_steps"] == 300  # its cap
    assert preset_values("quick", "LORA", task="CAUSAL_LM", train_rows=40)["max_steps"] == 30  # the floor
    assert preset_values("quick", "LORA", task="CAUSAL_LM", train_rows=10**6)["max_steps"] == 150  # the cap
    # About five evals a quick run, eight in balanced; whole epochs there, and a fixed interval without data.
    assert cls["eval_every"] == 60 and causal["eval_every"] == 22
    balanced = preset_values("balanced", "IA3", task="CAUSAL_LM", train_rows=880)
    assert balanced["max_steps"] == 0 and balanced["epochs"] == 2.0 and balanced["eval_every"] == 28
    assert preset_values("balanced", "IA3")["eval_every"] == PRESETS["balanced"].eval_every


@pytest.mark.parametrize("peft_type", sorted(tuners.METHODS))
def test_every_method_declares_a_learning_rate_inside_a_plausible_range(peft_type):
    method = tuners.METHODS[peft_type]
    low, high = method.learning_rate_range
    assert 1e-6 <= low <= method.learning_rate <= high <= 1.0
    assert high / low <= 100  # a range, not "anything goes": the warning is measured from it
    assert not check_learning_rate(peft_type, method.learning_rate).far_off


@pytest.mark.parametrize(("lr", "far_off", "too_high"), [
    (3e-3, False, False), (3e-4, False, False),  # inside; 3.3x below: a note, no warning
    (5e-5, True, False), (0.5, True, True), (0.31, True, True), (0.29, False, True),
])
def test_a_learning_rate_far_outside_the_methods_range_is_flagged(lr, far_off, too_high):
    check = check_learning_rate("IA3", lr)  # (IA)³: 1e-3 .. 3e-2
    assert check.far_off is far_off and check.too_high is too_high


def test_the_train_step_follows_the_method_unless_the_rate_was_typed():
    from app.ui.steps import train as train_step

    ia3, lora = tuners.METHODS["IA3"].learning_rate, tuners.METHODS["LORA"].learning_rate
    assert train_step.follow_method("IA3", lora, "LORA") == {"train.learning_rate": ia3, "train.rate_method": "IA3"}
    assert train_step.follow_method("LORA", lora, "LORA") == {}  # a repeated event rewrites nothing
    # a typed rate stays (no learning rate in the answer); the method is followed from now on
    assert train_step.follow_method("IA3", 0.0123, "LORA") == {"train.rate_method": "IA3"}
    assert train_step.apply_preset("quick", "IA3")["train.learning_rate"] == ia3
    assert set(train_step.apply_preset("quick", "IA3")) == set(train_step.PRESET_FIELDS)
    assert train_step.apply_preset("quick", "IA3", "SEQ_CLS", 880)["train.max_steps"] == 300
    note = train_step.learning_rate_note("IA3", 5e-6)
    assert "Warning" in note and "200× below" in note and "(IA)³" in note
    assert "Warning" not in train_step.learning_rate_note("IA3", ia3)

from __future__ import annotations

import pytest

from app.core.spec import RunSpec, SpecError

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


# --------------------------------------------------------------------------- one set of method defaults
# The studio's form and a spec file (the CLI) share one rule for what a method fills in when a spec
# leaves it out: tuners' Method.with_defaults. These tests hold the two paths to the same result.

ONLY_THE_METHOD = """\
name: cli-defaults
model: {{name: SmolLM2-135M-Instruct}}
data: {{dataset: pairs.csv}}
method: {{peft_type: {peft_type}}}
"""


def _form_config(peft_type: str, **changes):
    from app.services.method_form import HIDDEN_FIELDS, build_config, describe_method

    form = describe_method(peft_type)
    values = {f.name: f.form_default() for f in form.fields if f.name not in HIDDEN_FIELDS}
    values.update(changes)
    return build_config(peft_type, values, task_type="CAUSAL_LM")


def _tiny_llama():
    import transformers

    from app.services.method_form import meta_model

    return meta_model(transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, num_key_value_heads=2, vocab_size=64))


def _methods():
    import tuners

    return sorted(tuners.METHODS)


@pytest.mark.parametrize("peft_type", _methods())
def test_a_spec_naming_only_the_method_gets_the_forms_defaults_and_they_attach(peft_type):
    import tuners

    spec = RunSpec.from_yaml(ONLY_THE_METHOD.format(peft_type=peft_type), source="spec.yaml")

    from_spec = tuners.config_from_dict(spec.adapter_config_dict())
    assert from_spec == _form_config(peft_type)
    assert spec.method.get("target_modules") == tuners.METHODS[peft_type].default_targets
    assert spec.training.learning_rate == tuners.METHODS[peft_type].learning_rate
    if peft_type != "BITFIT":  # Llama has no biases for BitFit; the engine test trains it on GPT-2
        tuned = tuners.apply(_tiny_llama(), from_spec.for_run(100))
        trainable, _ = tuned.trainable_parameters()
        # FishMask picks its weights from the data (calibration), so nothing is trainable before that.
        assert trainable > 0 or tuners.METHODS[peft_type].calibrate is not None


@pytest.mark.parametrize("empty", [None, "", []])
def test_emptied_targets_mean_the_methods_default_in_the_form_and_in_a_spec(empty):
    spec = RunSpec.from_dict({"model": "m", "data": {"dataset": "x"},
                              "method": {"peft_type": "LORA", "target_modules": empty}})
    assert spec.method["target_modules"] == "attention"
    assert _form_config("LORA", target_modules="").target_modules == "attention"


def test_a_learning_rate_the_spec_names_is_kept():
    spec = RunSpec.from_dict({"model": "m", "data": {"dataset": "x"}, "method": {"peft_type": "IA3"},
                              "training": {"learning_rate": 5e-5}})
    assert spec.training.learning_rate == pytest.approx(5e-5)
    again = RunSpec.from_yaml(spec.to_yaml())
    assert again == spec


def _cli(tmp_path, spec_text):
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "spec.yaml"
    path.write_text(spec_text, encoding="utf-8")
    (tmp_path / "pairs.csv").write_text("prompt,response\nhi,hello\n", encoding="utf-8")
    env = {**os.environ, "TUNESTUDIO_HOME": str(tmp_path / "home"), "TUNESTUDIO_DATA_ROOTS": str(tmp_path)}
    for key in ("TUNESTUDIO_DATABASE_URL", "TUNESTUDIO_BROKER_URL"):
        env.pop(key, None)
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "app.cli", "train", str(path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_queues_a_spec_that_names_only_lora_with_the_forms_targets(tmp_path):
    """The real ``tunestudio train``: accepted, and the stored spec trains the layers the form picks."""
    import tuners
    from app.core.settings import Settings
    from app.services import Context, get_run

    done = _cli(tmp_path, ONLY_THE_METHOD.format(peft_type="LORA"))
    assert done.returncode == 0, done.stderr
    assert "run 1 queued: cli-defaults" in done.stdout

    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    try:
        stored = get_run(ctx, 1).spec
    finally:
        ctx.close()
    assert tuners.config_from_dict({**stored["method"], "task_type": "CAUSAL_LM"}) == _form_config("LORA")
    assert stored["method"]["target_modules"] == "attention"
    assert stored["method"]["lora_alpha"] == 16  # the form's alpha, not peft's 8 for a folder that omits it
    assert stored["training"]["learning_rate"] == pytest.approx(2e-4)


@pytest.mark.parametrize(("field", "value"), [("r", 0), ("lora_dropout", 1.5)])
def test_the_cli_and_the_studio_refuse_a_bad_method_value_in_the_same_words(tmp_path, field, value):
    from app.services.wizard import WizardChoices, build_spec
    from tuners.config import ConfigError

    with pytest.raises(ConfigError) as studio:
        build_spec(WizardChoices(name="x", model="SmolLM2-135M-Instruct", dataset="chatterbot", peft_type="LORA",
                                 method_values={field: value}))
    studio_words = str(studio.value)
    assert studio_words.startswith(f"{field}: ")

    text = ONLY_THE_METHOD.format(peft_type="LORA").replace("peft_type: LORA}", f"peft_type: LORA, {field}: {value}}}")
    done = _cli(tmp_path, text)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {tmp_path / 'spec.yaml'}, line 4: method.{studio_words}"


def test_the_cli_reads_data_next_to_the_spec_and_stores_it_absolute(tmp_path):
    from app.core.settings import Settings
    from app.services import Context, get_run

    done = _cli(tmp_path, ONLY_THE_METHOD.format(peft_type="LORA").replace("pairs.csv", "./pairs.csv"))
    assert done.returncode == 0, done.stderr
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    try:
        assert get_run(ctx, 1).spec["data"]["dataset"] == str((tmp_path / "pairs.csv").resolve())
    finally:
        ctx.close()


@pytest.mark.parametrize("dataset", ["/etc/passwd", "../../../../../../../../etc/passwd", "linked.csv", "nope.csv"])
def test_the_cli_refuses_data_outside_the_allowed_folders_before_queueing(tmp_path, dataset):
    (tmp_path / "linked.csv").symlink_to("/etc/passwd")
    done = _cli(tmp_path, ONLY_THE_METHOD.format(peft_type="LORA").replace("pairs.csv", dataset))
    assert done.returncode == 1
    if dataset == "nope.csv":
        assert "data.dataset: no such file: nope.csv" in done.stderr
    else:
        assert f"data.dataset: {dataset} is outside the folders runs may read data from ({tmp_path})" in done.stderr
    assert "queued" not in done.stdout
    from app.core.settings import Settings
    from app.services import Context, list_runs

    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    try:
        assert list_runs(ctx) == []
    finally:
        ctx.close()


@pytest.mark.parametrize(("line", "message"), [
    ("  max_steps: 3000000000", "training.max_steps: must be <= 2,147,483,647, got 3,000,000,000"),
    ("  learning_rate: .nan", "training.learning_rate: must be a finite number, got nan"),
    ("  learning_rate: .inf", "training.learning_rate: must be a finite number, got inf"),
    ("  learning_rate: 3", "training.learning_rate: must be <= 1, got 3"),
    ("  batch_size: 100000", "training.batch_size: must be <= 4,096, got 100,000"),
    ("  grad_accum: 99999", "training.grad_accum: must be <= 4,096, got 99,999"),
    ("  epochs: .inf", "training.epochs: must be a finite number, got inf"),
    ("  weight_decay: .nan", "training.weight_decay: must be a finite number, got nan"),
    ("  eval_every: 9999999999", "training.eval_every: must be <= 2,147,483,647, got 9,999,999,999"),
])
def test_training_values_beyond_sane_bounds_are_refused_with_the_field_and_line(line, message):
    text = GOOD.replace("  learning_rate: 2e-4\n", "") + line + "\n"
    with pytest.raises(SpecError) as err:
        RunSpec.from_yaml(text, source="spec.yaml")
    assert str(err.value) == f"spec.yaml, line 7: {message}"

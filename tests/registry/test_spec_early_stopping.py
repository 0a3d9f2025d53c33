"""The spec's early-stopping and best-eval fields: checked before queueing, each error naming its field and line."""

from __future__ import annotations

import pytest

from app.core.spec import RunSpec, SpecError

SPEC = """\
name: tiny
model: {name: SmolLM2-135M-Instruct}
data: {dataset: pairs.csv, shape: prompt_completion, max_length: 64}
method: {peft_type: LORA}
training:
  eval_every: 10
  early_stopping_patience: 3
  early_stopping_min_delta: 1e-3
"""


def test_early_stopping_fields_load_and_round_trip():
    spec = RunSpec.from_yaml(SPEC)
    t = spec.training
    assert (t.early_stopping_patience, t.early_stopping_min_delta, t.best_metric) == (3, pytest.approx(1e-3), "loss")
    assert RunSpec.from_yaml(spec.to_yaml()) == spec
    off = RunSpec.from_yaml(SPEC.replace("  early_stopping_patience: 3\n", ""))
    assert off.training.early_stopping_patience == 0  # off unless asked for


@pytest.mark.parametrize(("edit", "path", "line", "words"), [
    (("patience: 3", "patience: -1"), "training.early_stopping_patience", 7, "must be >= 0"),
    (("patience: 3", "patience: soon"), "training.early_stopping_patience", 7, "must be an integer"),
    (("min_delta: 1e-3", "min_delta: -0.1"), "training.early_stopping_min_delta", 8, "must be >= 0"),
    (("min_delta: 1e-3", "min_delta: .nan"), "training.early_stopping_min_delta", 8, "finite"),
    (("eval_every: 10", "eval_every: 0"), "training.early_stopping_patience", 7, "set training.eval_every above 0"),
    (("max_length: 64}", "max_length: 64, val_fraction: 0}"), "training.early_stopping_patience", 7,
     "needs a validation split"),
    (("eval_every: 10", "eval_every: 10\n  best_metric: f1"), "training.best_metric", 7, "not one of loss, accuracy"),
    (("eval_every: 10", "eval_every: 10\n  best_metric: accuracy"), "training.best_metric", 7,
     "this run's task is CAUSAL_LM"),
])
def test_a_bad_early_stopping_field_is_named(edit, path, line, words):
    with pytest.raises(SpecError) as err:
        RunSpec.from_yaml(SPEC.replace(*edit), source="spec.yaml")
    assert (err.value.path, err.value.where) == (path, f"spec.yaml, line {line}")
    assert words in err.value.message


def test_accuracy_ranks_a_classifier_and_a_separate_validation_file_is_a_split():
    text = SPEC.replace("data: {dataset: pairs.csv, shape: prompt_completion, max_length: 64}",
                        "data: {dataset: reviews.csv, shape: classification, val_fraction: 0, validation: v.csv}")
    spec = RunSpec.from_yaml(text.replace("eval_every: 10", "eval_every: 10\n  best_metric: accuracy"))
    assert spec.task == "SEQ_CLS" and spec.training.best_metric == "accuracy"

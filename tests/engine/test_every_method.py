"""Every method in the catalogue trains through the engine from the studio's default form values.

This is the path a person takes: the method step describes the method (fields, defaults), the wizard
turns the form into a spec's ``method`` section, the worker trains it and saves an adapter that the
core loads again.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import tuners
from app.core.spec import RunSpec
from app.services.method_form import HIDDEN_FIELDS, build_config, config_values, describe_method
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from tests.support.tiny_models import batch
from worker.engine import MemoryReporter, train

# Llama has no biases for BitFit to train; GPT-2 has.
FAMILY = {"BITFIT": "gpt2"}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(root / family, family) for family in ("llama", "gpt2")}


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory):
    return write_mapping_csv(tmp_path_factory.mktemp("data") / "colours.csv", repeats=2)


@pytest.mark.parametrize("peft_type", sorted(tuners.METHODS))
def test_method_trains_from_the_studio_defaults_and_its_adapter_reloads(peft_type, model_dirs, mapping_file, tmp_path):
    family = FAMILY.get(peft_type, "llama")
    form = describe_method(peft_type)
    values = {f.name: f.form_default() for f in form.fields if f.name not in HIDDEN_FIELDS}
    config = build_config(peft_type, values, task_type="CAUSAL_LM")
    spec = mapping_spec(model_dirs[family], mapping_file, max_steps=3, eval_every=0)
    spec["method"] = {"peft_type": peft_type, **config_values(config)}
    reporter = MemoryReporter()

    result = train(RunSpec.from_dict(spec), tmp_path / "out", reporter, tmp_path / "models")

    losses = [p.loss for p in reporter.points if p.split == "train"]
    assert result.steps == 3 and len(losses) == 3 and all(math.isfinite(x) for x in losses)
    inputs = batch(family)
    base = AutoModelForCausalLM.from_pretrained(model_dirs[family]).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
    tuned = tuners.load(AutoModelForCausalLM.from_pretrained(model_dirs[family]), result.adapter_dir).eval()
    assert tuned.configs["default"].peft_type == peft_type
    with torch.no_grad():
        tuned_logits = tuned(**inputs).logits
    # Three steps at lr 0.02 move every method away from the base model.
    assert not torch.allclose(tuned_logits[:, -1], base_logits[:, -1], atol=1e-6)

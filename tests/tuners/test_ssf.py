"""SSF: the formula, identity at init, merge equivalence (with and without a base bias), save/load, training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, perturb, train_losses
from tuners.methods.ssf import SSFConfig, SSFLayer

FAMILIES = [("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS"), ("t5", "SEQ_2_SEQ_LM")]


def test_layer_is_scale_then_shift_of_the_output():
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 3)
    layer = SSFLayer(base)
    layer.add("a")
    layer.set_adapter("a")
    gamma, beta = torch.tensor([0.5, 2.0, -1.0]), torch.tensor([0.1, 0.0, 3.0])
    with torch.no_grad():
        layer.ssf_scale["a"].copy_(gamma)
        layer.ssf_shift["a"].copy_(beta)
    x = torch.randn(4, 5)
    torch.testing.assert_close(layer(x), (x @ base.weight.T + base.bias) * gamma + beta)


@pytest.mark.parametrize("family,task", FAMILIES)
def test_identity_at_init_and_placed_after_attention_and_ffn_outputs(family, task):
    inputs = model_inputs(family, task)
    tuned = tuners.apply(tiny_model(family, task), SSFConfig(task_type=task))
    with torch.no_grad():
        torch.testing.assert_close(tuned(**inputs).logits, tiny_model(family, task)(**inputs).logits, rtol=0, atol=0)
    leaves = {n.rsplit(".", 1)[-1] for n, m in tuned.model.named_modules() if isinstance(m, SSFLayer)}
    expected = {"llama": {"o_proj", "down_proj"}, "gpt2": {"c_proj"}, "bert": {"dense"}, "t5": {"o", "wo"}}[family]
    assert leaves == expected


@pytest.mark.parametrize("family,task", [("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_merge_folds_scale_and_shift_into_the_linear(family, task):
    tuned = tuners.apply(tiny_model(family, task), SSFConfig(task_type=task))
    perturb(tuned)
    inputs = model_inputs(family, task)
    with torch.no_grad():
        expected = tuned(**inputs).logits
        tuned.merge()
        torch.testing.assert_close(tuned(**inputs).logits, expected, rtol=1e-4, atol=1e-5)
        tuned.unmerge()
        torch.testing.assert_close(tuned(**inputs).logits, expected, rtol=1e-4, atol=1e-5)
        with tuned.disabled():
            torch.testing.assert_close(tuned(**inputs).logits, tiny_model(family, task)(**inputs).logits)
        merged = tuned.merge_and_unload()
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=1e-4, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    tuned = tuners.apply(tiny_model("gpt2"), SSFConfig(placement="ffn"))
    perturb(tuned)
    tuned.save_pretrained(tmp_path / "a")
    keys = sorted(load_file(str(tmp_path / "a" / "adapter_model.safetensors")))
    assert keys == [f"base_model.model.transformer.h.{i}.mlp.c_proj.ssf_{p}" for i in (0, 1) for p in ("scale", "shift")]
    loaded = tuners.load(tiny_model("gpt2"), tmp_path / "a")
    inputs = model_inputs("gpt2", "CAUSAL_LM")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)
    assert loaded.trainable_parameters()[1] == tuned.trainable_parameters()[1]
    assert tuned.trainable_parameters()[0] == 2 * 2 * 32


def test_bad_placement_names_the_field():
    with pytest.raises(tuners.ConfigError, match="^placement"):
        tuners.apply(tiny_model("gpt2"), SSFConfig(placement="everywhere"))


@pytest.mark.parametrize("family,task", [("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM")])
def test_training_lowers_the_loss(family, task):
    losses = train_losses(tuners.apply(tiny_model(family, task), SSFConfig(task_type=task)), family, task, lr=0.1)
    assert losses[-1] < losses[0] - 0.1

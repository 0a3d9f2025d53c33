"""LoHa against peft 0.21.2 (the oracle) and against its formula."""

import pytest
import torch

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.reparam_support import (
    assert_merge_matches_unmerged,
    assert_ours_loads_in_peft,
    assert_peft_loads_in_ours,
    eval_loss,
    inputs_for,
    logits,
    peft_trainable_count,
    perturb,
    train,
)
from tuners.methods.loha import LohaConfig, LohaLayer

# peft's LoHa adapts nn.Linear only (not GPT-2's Conv1D), so interop uses Llama and BERT.
INTEROP = [("llama", "CAUSAL_LM", ["q_proj", "v_proj", "down_proj"]), ("bert", "SEQ_CLS", ["query", "value"])]


def peft_config(task, targets, **kw):
    from peft import LoHaConfig

    return LoHaConfig(task_type=task, target_modules=targets, **kw)


@pytest.mark.parametrize("family,task,targets", INTEROP)
def test_saved_adapter_loads_in_peft_with_equal_outputs(family, task, targets, tmp_path):
    tuned = tuners.apply(tiny_model(family, task), LohaConfig(r=4, alpha=6, target_modules=targets, task_type=task,
                                                              rank_pattern={"v_proj": 2, "value": 3},
                                                              alpha_pattern={"q_proj": 3}))
    perturb(tuned)
    assert_ours_loads_in_peft(tuned, family, task, tmp_path)


@pytest.mark.parametrize("family,task,targets", INTEROP)
def test_peft_adapter_loads_in_ours_with_equal_outputs(family, task, targets, tmp_path):
    assert_peft_loads_in_ours(peft_config(task, targets, r=3, alpha=5), family, task, tmp_path)


@pytest.mark.parametrize("family,task,targets", INTEROP)
def test_trainable_parameter_count_equals_peft(family, task, targets):
    tuned = tuners.apply(tiny_model(family, task), LohaConfig(r=4, target_modules=targets, task_type=task))
    heads = {"modules_to_save": tuned.config.modules_to_save} if tuned.config.modules_to_save else {}
    assert tuned.trainable_parameters() == peft_trainable_count(peft_config(task, targets, r=4, **heads), family, task)


def test_delta_is_scaled_hadamard_product_of_two_low_rank_products():
    base = torch.nn.Linear(6, 5)
    layer = LohaLayer(base)
    layer.add("a", "x", LohaConfig(r=2, alpha=3, target_modules=["x"], init_weights=False))
    w1 = layer.hada_w1_a["a"] @ layer.hada_w1_b["a"]
    w2 = layer.hada_w2_a["a"] @ layer.hada_w2_b["a"]
    layer.set_adapter("a")
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), base(x) + x @ ((w1 * w2) * 1.5).T)


def test_fresh_adapter_is_the_base_model():
    tuned = tuners.apply(tiny_model("llama"), LohaConfig(target_modules="all-linear"))
    with tuned.disabled():
        base = logits(tuned, inputs_for("llama"))
    torch.testing.assert_close(logits(tuned, inputs_for("llama")), base, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_merged_equals_unmerged(family):
    assert_merge_matches_unmerged(tuners.apply(tiny_model(family), LohaConfig(r=4, target_modules="all-linear")), family)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_training_lowers_the_loss(family):
    tuned = tuners.apply(tiny_model(family), LohaConfig(r=4, alpha=8, target_modules="all-linear"))
    before = eval_loss(tuned, family)
    train(tuned, family, steps=10, lr=5e-2)
    assert eval_loss(tuned, family) < before - 0.2


@pytest.mark.parametrize("field,value", [("r", 0), ("alpha", -1), ("rank_dropout", 1.0), ("module_dropout", -0.1),
                                         ("rank_pattern", {"q_proj": 0})])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(tuners.ConfigError, match=rf"^{field}"):
        LohaConfig(target_modules=["q_proj"], **{field: value}).validate()


def test_on_gpt2_conv1d_the_model_card_and_the_oracle_agree_that_peft_cannot_load_it(tmp_path):
    from peft import PeftModel

    on_llama = tuners.apply(tiny_model("llama"), LohaConfig(r=2, target_modules=["q_proj"]))
    assert on_llama.method.peft_loads(on_llama, "default") == (True, None)
    tuned = tuners.apply(tiny_model("gpt2"), LohaConfig(r=2, target_modules=["c_attn", "c_fc"]))
    ok, reason = tuned.method.peft_loads(tuned, "default")
    assert not ok and "Conv1D" in reason and "c_attn, c_fc" in reason
    tuned.save_pretrained(tmp_path / "a")
    card = (tmp_path / "a" / "README.md").read_text()
    assert "peft cannot load this adapter" in card and "PeftModel.from_pretrained" not in card
    with pytest.raises((ValueError, TypeError), match="(?i)conv1d|not supported"):
        PeftModel.from_pretrained(tiny_model("gpt2"), str(tmp_path / "a"))
    inputs = inputs_for("gpt2", "CAUSAL_LM")
    assert torch.equal(logits(tuners.load(tiny_model("gpt2"), tmp_path / "a"), inputs), logits(tuned, inputs))

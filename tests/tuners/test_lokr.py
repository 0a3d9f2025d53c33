"""LoKr against peft 0.21.2 (the oracle) and against its formula."""

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
from tuners.methods.lokr import LokrConfig, LokrLayer, factorization

# peft's LoKr adapts nn.Linear only (not GPT-2's Conv1D), so interop uses Llama and BERT.
INTEROP = [("llama", "CAUSAL_LM", ["q_proj", "v_proj", "down_proj"]), ("bert", "SEQ_CLS", ["query", "value"])]
# Each decomposition rule: full W1/W2; W2 factored; both factored; a forced split factor.
SHAPES = [dict(r=16), dict(r=2), dict(r=1, decompose_both=True), dict(r=2, decompose_factor=4)]


def peft_config(task, targets, **kw):
    from peft import LoKrConfig

    return LoKrConfig(task_type=task, target_modules=targets, **kw)


@pytest.mark.parametrize("dimension", [1, 7, 12, 32, 64, 96, 127, 128, 360, 768])
@pytest.mark.parametrize("factor", [-1, 2, 4, 5, 8])
def test_factorization_equals_peft(dimension, factor):
    from peft.tuners.lokr.layer import factorization as peft_factorization

    assert factorization(dimension, factor) == peft_factorization(dimension, factor)


@pytest.mark.parametrize("family,task,targets,shape",
                         [(*INTEROP[0], shape) for shape in SHAPES] + [(*INTEROP[1], SHAPES[2])])
def test_saved_adapter_loads_in_peft_with_equal_outputs(family, task, targets, shape, tmp_path):
    tuned = tuners.apply(tiny_model(family, task), LokrConfig(alpha=6, target_modules=targets, task_type=task, **shape))
    perturb(tuned)
    assert_ours_loads_in_peft(tuned, family, task, tmp_path)


@pytest.mark.parametrize("family,task,targets", INTEROP)
def test_peft_adapter_loads_in_ours_with_equal_outputs(family, task, targets, tmp_path):
    config = peft_config(task, targets, r=2, alpha=5, decompose_both=True, rank_pattern={"v_proj": 8, "value": 8})
    assert_peft_loads_in_ours(config, family, task, tmp_path)


@pytest.mark.parametrize("shape", SHAPES)
def test_trainable_parameter_count_equals_peft(shape):
    targets = ["q_proj", "v_proj", "down_proj"]
    tuned = tuners.apply(tiny_model("llama"), LokrConfig(target_modules=targets, **shape))
    assert tuned.trainable_parameters() == peft_trainable_count(peft_config("CAUSAL_LM", targets, **shape), "llama",
                                                                "CAUSAL_LM")


def test_delta_is_scaled_kronecker_product():
    base = torch.nn.Linear(6, 8)  # out 8 = 2·4, in 6 = 2·3
    layer = LokrLayer(base)
    layer.add("a", "x", LokrConfig(r=1, alpha=3, target_modules=["x"], init_weights=False))
    w1 = layer.lokr_w1["a"]
    w2 = layer.lokr_w2_a["a"] @ layer.lokr_w2_b["a"]
    assert w1.shape == (2, 2) and w2.shape == (4, 3)
    expected = torch.stack([torch.cat([w1[i, j] * w2 for j in range(2)], dim=1) for i in range(2)]).reshape(8, 6)
    layer.set_adapter("a")
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), base(x) + x @ (expected * 3.0).T)


@pytest.mark.parametrize("init", [True, "lycoris"])
def test_fresh_adapter_is_the_base_model(init):
    tuned = tuners.apply(tiny_model("llama"), LokrConfig(r=2, target_modules="all-linear", init_weights=init))
    with tuned.disabled():
        base = logits(tuned, inputs_for("llama"))
    torch.testing.assert_close(logits(tuned, inputs_for("llama")), base, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_merged_equals_unmerged(family):
    config = LokrConfig(r=2, decompose_both=True, target_modules="all-linear")
    assert_merge_matches_unmerged(tuners.apply(tiny_model(family), config), family)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_training_lowers_the_loss(family):
    tuned = tuners.apply(tiny_model(family), LokrConfig(r=4, alpha=8, target_modules="all-linear"))
    before = eval_loss(tuned, family)
    train(tuned, family, steps=10, lr=5e-2)
    assert eval_loss(tuned, family) < before - 0.2


@pytest.mark.parametrize("field,value", [("r", 0), ("alpha", 0), ("decompose_factor", 0), ("init_weights", "zeros"),
                                         ("rank_dropout", 1.5)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(tuners.ConfigError, match=rf"^{field}"):
        LokrConfig(target_modules=["q_proj"], **{field: value}).validate()

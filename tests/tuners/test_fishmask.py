"""FishMask: the mask is the top-k of the squared gradients, the diff is the formula, round trip, training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, task_inputs, train_losses
from tuners.methods.fishmask import FishMaskConfig, FishMaskLinear, estimate_mask, merge_diff


def _masked(family="gpt2", task="CAUSAL_LM", **kwargs):
    tuned = tuners.apply(tiny_model(family, task), FishMaskConfig(task_type=task, **kwargs))
    estimate_mask(tuned, [task_inputs(family, task)])
    return tuned


def test_mask_is_the_top_k_squared_gradients_in_out_in_layout():
    model = tiny_model("gpt2")
    config = FishMaskConfig(target_modules=["c_fc", "attn.c_proj"], num_parameters=50)
    mask = estimate_mask(model, [task_inputs("gpt2", "CAUSAL_LM")], config)
    model.zero_grad()
    model(**task_inputs("gpt2", "CAUSAL_LM")).loss.backward()
    grads = {n: m.weight.grad.T ** 2 for n, m in model.named_modules() if n.endswith(("c_fc", "attn.c_proj"))}
    flat = torch.cat([grads[n].reshape(-1) for n in grads])
    threshold = torch.topk(flat, 50).values[-1]
    assert sum(v.numel() for v in mask.values()) == 50
    for name, indices in mask.items():
        assert (grads[name].reshape(-1)[indices] >= threshold).all()


def test_budget_is_the_trainable_count_and_init_is_the_base_model():
    tuned = _masked(density=0.01)
    eligible = sum(m.in_features * m.out_features for m in tuned.model.modules() if isinstance(m, FishMaskLinear))
    assert tuned.trainable_parameters()[0] == round(0.01 * eligible)
    inputs = model_inputs("gpt2", "CAUSAL_LM")
    with torch.no_grad():
        torch.testing.assert_close(tuned(**inputs).logits, tiny_model("gpt2")(**inputs).logits, rtol=0, atol=0)


def test_diff_adds_only_at_the_masked_positions():
    tuned = _masked(num_parameters=30)
    layer = next(m for m in tuned.model.modules() if isinstance(m, FishMaskLinear) and m.adapter_names)
    diff, slot = layer._diffs["default"]
    with torch.no_grad():
        diff.values[slot].copy_(torch.randn(diff.values[slot].shape))
    x = torch.randn(2, layer.in_features)
    dense = torch.zeros(layer.out_features * layer.in_features)
    dense[diff.indices(slot)] = diff.values[slot].detach()
    expected = layer.base_layer(x) + x @ dense.view(layer.out_features, layer.in_features).T
    torch.testing.assert_close(layer(x), expected)


def test_sparse_diff_round_trip_and_merge(tmp_path):
    tuned = _masked(num_parameters=200)
    for p in tuned.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.5)
    tuned.save_pretrained(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert sum(v.numel() for k, v in saved.items() if k.endswith("fishmask_values")) == 200
    loaded = tuners.load(tiny_model("gpt2"), tmp_path / "a")
    inputs = model_inputs("gpt2", "CAUSAL_LM")
    with torch.no_grad():
        expected = tuned(**inputs).logits
        assert not torch.allclose(expected, tiny_model("gpt2")(**inputs).logits, atol=1e-4)
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=0)
        merge_diff(loaded)
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,field", [(dict(density=0.0), "density"), (dict(num_parameters=-1), "num_parameters"),
                                          (dict(num_batches=0), "num_batches")])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(tuners.ConfigError, match=f"^{field}"):
        tuners.apply(tiny_model("gpt2"), FishMaskConfig(**kwargs))


@pytest.mark.parametrize("family,task", [("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_training_lowers_the_loss(family, task):
    losses = train_losses(_masked(family, task, density=0.05), family, task, steps=12, lr=0.05)
    assert losses[-1] < losses[0] - 0.1

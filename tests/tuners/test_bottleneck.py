"""Bottleneck adapters: the formula per variant, identity at init, placement, save/load, no merge, training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, perturb, train_losses
from tuners.methods.bottleneck import BottleneckConfig, ParallelBottleneck, SequentialBottleneck

FAMILIES = [("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS"), ("t5", "SEQ_2_SEQ_LM")]


def _adapter_by_hand(layer, name, h):
    down, up = layer.adapter_down[name], layer.adapter_up[name]
    return (torch.relu(h @ down.weight.T + down.bias) @ up.weight.T + up.bias) * layer.scaling[name]


def test_sequential_layer_is_h_plus_scaled_bottleneck_of_h():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 8)
    layer = SequentialBottleneck(base, 8, base.weight)
    layer.add("a", BottleneckConfig(bottleneck_size=3, scaling=0.5))
    layer.set_adapter("a")
    perturb(layer)
    x = torch.randn(2, 6)
    h = base(x)
    torch.testing.assert_close(layer(x), h + _adapter_by_hand(layer, "a", h))


def test_parallel_layer_adds_the_bottleneck_of_the_sublayer_input():
    torch.manual_seed(0)
    ffn = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    layer = ParallelBottleneck(ffn, 8, ffn[0].weight, residual_input=False)
    layer.add("a", BottleneckConfig(bottleneck_size=2))
    layer.set_adapter("a")
    perturb(layer)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), ffn(x) + _adapter_by_hand(layer, "a", x))


@pytest.mark.parametrize("variant", ["houlsby", "pfeiffer", "parallel"])
@pytest.mark.parametrize("family,task", FAMILIES)
def test_every_variant_is_the_base_model_at_init(family, task, variant):
    inputs = model_inputs(family, task)
    tuned = tuners.apply(tiny_model(family, task), BottleneckConfig(variant=variant, task_type=task))
    with torch.no_grad():
        torch.testing.assert_close(tuned(**inputs).logits, tiny_model(family, task)(**inputs).logits, rtol=0, atol=0)
    sites = [m for m in tuned.model.modules() if isinstance(m, SequentialBottleneck | ParallelBottleneck)]
    blocks = 4 if family == "t5" else 2
    attention = {"houlsby": 6 if family == "t5" else 2, "pfeiffer": 0, "parallel": 0}[variant]
    assert len(sites) == blocks + attention


@pytest.mark.parametrize("family,task,leaves", [
    ("llama", "CAUSAL_LM", {"o_proj", "down_proj"}),
    ("bert", "SEQ_CLS", {"dense"}),
])
def test_houlsby_sits_after_attention_and_ffn_outputs(family, task, leaves):
    tuned = tuners.apply(tiny_model(family, task), BottleneckConfig(task_type=task))
    found = {n.rsplit(".", 1)[-1] for n, m in tuned.model.named_modules() if isinstance(m, SequentialBottleneck)}
    assert found == leaves


def test_parallel_on_bert_feeds_the_residual_input_of_the_output_module():
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"), BottleneckConfig(variant="parallel", task_type="SEQ_CLS"))
    layer = tuned.model.bert.encoder.layer[0].output
    assert isinstance(layer, ParallelBottleneck) and layer.residual_input
    perturb(tuned)
    h, residual = torch.randn(2, 3, 64), torch.randn(2, 3, 32)
    with torch.no_grad():
        expected = layer.base_layer(h, residual + _adapter_by_hand(layer, "default", residual))
        torch.testing.assert_close(layer(h, residual), expected)


@pytest.mark.parametrize("variant", ["houlsby", "parallel"])
def test_save_and_load_round_trip_and_parameter_count(variant, tmp_path):
    tuned = tuners.apply(tiny_model("llama"), BottleneckConfig(variant=variant, reduction_factor=8))
    perturb(tuned)
    tuned.save_pretrained(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    sites = 4 if variant == "houlsby" else 2
    per_site = (32 * 4 + 4) + (4 * 32 + 32)
    assert len(saved) == 4 * sites
    assert tuned.trainable_parameters()[0] == sites * per_site == sum(v.numel() for v in saved.values())
    loaded = tuners.load(tiny_model("llama"), tmp_path / "a")
    inputs = model_inputs("llama", "CAUSAL_LM")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)


def test_merge_is_refused_because_the_adapter_is_nonlinear():
    tuned = tuners.apply(tiny_model("gpt2"), BottleneckConfig())
    with pytest.raises(NotImplementedError):
        tuned.merge()


@pytest.mark.parametrize("kwargs,field", [
    (dict(variant="sideways"), "variant"),
    (dict(reduction_factor=0), "reduction_factor"),
    (dict(bottleneck_size=-2), "bottleneck_size"),
    (dict(non_linearity="swish2"), "non_linearity"),
    (dict(adapter_dropout=1.5), "adapter_dropout"),
    (dict(variant="parallel", target_modules=["o_proj"]), "target_modules"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(tuners.ConfigError, match=f"^{field}"):
        tuners.apply(tiny_model("llama"), BottleneckConfig(**kwargs))


@pytest.mark.parametrize("family,task,variant", [("llama", "CAUSAL_LM", "houlsby"), ("bert", "SEQ_CLS", "parallel")])
def test_training_lowers_the_loss(family, task, variant):
    tuned = tuners.apply(tiny_model(family, task), BottleneckConfig(variant=variant, task_type=task))
    losses = train_losses(tuned, family, task, lr=0.05)
    assert losses[-1] < losses[0] - 0.1

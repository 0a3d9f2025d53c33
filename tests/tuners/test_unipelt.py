"""UniPELT hybrid: each gated branch against its formula, identity at init, save/load, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuners
from tests.support.tiny_models import batch, tiny_model
from tests.tuners.synthetic_task import adam_losses
from tuners.config import ConfigError
from tuners.methods.bottleneck import BottleneckConfig
from tuners.methods.lora import LoraConfig
from tuners.methods.prefix_tuning import PrefixTuningConfig
from tuners.methods.unipelt import GatedBottleneck, GatedLoraLinear, GatedPrefixEncoder, UniPeltConfig


def _perturb(module: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


def test_gated_lora_matches_formula_and_is_identity_at_init():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = GatedLoraLinear(base)
    layer.add("a", 2, 4.0, LoraConfig(r=2, lora_alpha=4))
    layer.set_adapter("a")
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), base(x))  # B = 0
    nn.init.normal_(layer.lora_B["a"].weight)
    nn.init.normal_(layer.lora_gate["a"].weight)
    A, B = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    w, c = layer.lora_gate["a"].weight, layer.lora_gate["a"].bias
    expected = x @ base.weight.T + base.bias + torch.sigmoid(x @ w.T + c) * (2.0 * x @ A.T @ B.T)
    torch.testing.assert_close(layer(x), expected)


def test_gated_adapter_matches_formula_and_is_identity_at_init():
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    layer = GatedBottleneck(base, 8, base.weight)
    layer.add("a", BottleneckConfig(variant="pfeiffer", reduction_factor=4, non_linearity="relu"))
    layer.set_adapter("a")
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(layer(x), base(x))  # up = 0
    nn.init.normal_(layer.adapter_up["a"].weight)
    h = base(x)
    down, up, gate = layer.adapter_down["a"], layer.adapter_up["a"], layer.adapter_gate["a"]
    a = F.relu(h @ down.weight.T + down.bias) @ up.weight.T + up.bias
    expected = h + torch.sigmoid(h @ gate.weight.T + gate.bias) * a
    torch.testing.assert_close(layer(x), expected)


def test_prefix_gate_scales_each_layers_values():
    cfg = PrefixTuningConfig(num_virtual_tokens=3, token_dim=8, num_attention_heads=2, num_layers=2,
                             num_transformer_submodules=1, encoder_hidden_size=8)
    enc = GatedPrefixEncoder(cfg)
    with torch.no_grad():
        enc.prefix_gate.copy_(torch.tensor([-1.0, 2.0]))
    table = enc.embedding.weight.view(3, 4, 2, 4).permute(1, 2, 0, 3)  # (2L, heads, nvt, head_dim)
    for layer, (k, v) in enumerate(enc.key_values(batch_size=2)):
        torch.testing.assert_close(k[0], table[2 * layer])
        torch.testing.assert_close(v[1], torch.sigmoid(enc.prefix_gate[layer]) * table[2 * layer + 1])


@pytest.mark.parametrize(("family", "task"), [("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_save_load_round_trip_and_no_merge(tmp_path, family, task):
    cfg = UniPeltConfig(task_type=task, num_virtual_tokens=3, r=2, reduction_factor=4)
    tuned = tuners.apply(tiny_model(family, task), cfg)
    _perturb(tuned)
    inputs = batch(family)
    ours = tuned(**inputs).logits
    with tuned.disabled():
        assert not torch.allclose(tuned(**inputs).logits, ours, atol=1e-3)
    tuned.save_pretrained(tmp_path)
    loaded = tuners.load(tiny_model(family, task), tmp_path)
    torch.testing.assert_close(loaded(**inputs).logits, ours, atol=1e-6, rtol=1e-6)
    with pytest.raises(NotImplementedError):
        tuned.merge()


def test_trainable_count_is_the_sum_of_the_three_branches():
    model = tiny_model("llama")
    tuned = tuners.apply(model, UniPeltConfig(num_virtual_tokens=3, r=2, reduction_factor=4))
    # 2 layers × (q: 32→32, v: 32→16) LoRA r=2 + gates; adapters after down_proj (32, width 8) + gate; prefix.
    lora = 2 * ((2 * 32 + 32 * 2 + 33) + (2 * 32 + 16 * 2 + 33))
    adapter = 2 * ((32 * 8 + 8) + (8 * 32 + 32) + 33)
    prefix = 3 * (2 * 2 * 16) + 2
    assert tuned.trainable_parameters()[0] == lora + adapter + prefix


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="reduction_factor"):
        UniPeltConfig(reduction_factor=0).validate()
    with pytest.raises(ConfigError, match="r:"):
        UniPeltConfig(r=0).validate()
    with pytest.raises(ConfigError, match="task_type"):
        UniPeltConfig(task_type="SEQ_2_SEQ_LM").validate()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_training_lowers_loss(family):
    torch.manual_seed(0)
    tuned = tuners.apply(tiny_model(family), UniPeltConfig(num_virtual_tokens=4, r=4, reduction_factor=4))
    inputs = batch(family, texts=("one two three four five", "one two three four five"))
    inputs["labels"] = inputs["input_ids"].clone()
    losses = adam_losses(tuned, inputs, steps=25, lr=0.05)
    assert losses[-1] < losses[0] - 0.3


def test_stacks_on_an_nf4_base_and_trains_only_adapter_parameters():
    tuned = tuners.apply(tuners.quantize(tiny_model("llama"), bits=4), UniPeltConfig(num_virtual_tokens=3, r=2))
    inputs = batch("llama")
    tuned(**inputs, labels=inputs["input_ids"]).loss.backward()
    grads = [n for n, p in tuned.named_parameters() if p.grad is not None]
    assert grads and not any("base_layer.weight" in n for n in grads)
    assert any("lora_B" in n for n in grads) and any("prefix_gate" in n for n in grads)

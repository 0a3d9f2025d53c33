"""Every method either trains on an NF4 base (QLoRA and friends) or refuses it by name.

Methods that update the base's own linear weights (full fine-tuning, layer freezing, FishMask) cannot
sit on packed 4-bit weights; every other method trains its own parameters on top, and the packed
weights stay exactly as they were.
"""

from __future__ import annotations

import pytest
import torch

import tuners
from tests.support.tiny_models import batch, tiny_model

FAMILY = {"BITFIT": "gpt2"}  # Llama has no biases


def _quantized(family: str):
    return tuners.quantize(tiny_model(family), bits=4, double_quant=True)


def _config(peft_type: str):
    config_cls = tuners.method_for(peft_type).config_cls
    config = config_cls(task_type="CAUSAL_LM").for_run(10)
    # The LoRA family has no architecture default for its targets; the studio starts it on attention.
    return config.replace(target_modules="attention") if peft_type in {"LORA", "LOHA", "LOKR", "ADALORA"} else config


@pytest.mark.parametrize("peft_type", sorted(p for p, m in tuners.METHODS.items() if not m.trains_base_weights))
def test_method_trains_on_an_nf4_base_and_leaves_the_packed_weights_alone(peft_type):
    family = FAMILY.get(peft_type, "llama")
    tuned = tuners.apply(_quantized(family), _config(peft_type))
    packed = {n: b.clone() for n, b in tuned.named_parameters() if b.dtype == torch.uint8}
    assert packed, "the base should hold packed 4-bit weights"
    trainable = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    inputs = batch(family)
    inputs["labels"] = inputs["input_ids"]

    loss = tuned(**inputs).loss
    loss.backward()
    assert all(p.grad is not None for p in trainable)
    optimizer.step()

    assert torch.isfinite(loss)
    for name, param in tuned.named_parameters():
        if name in packed:
            assert torch.equal(param, packed[name]), name


@pytest.mark.parametrize("peft_type", sorted(p for p, m in tuners.METHODS.items() if m.trains_base_weights))
def test_methods_that_train_base_weights_refuse_a_quantized_base_by_name(peft_type):
    with pytest.raises(tuners.ConfigError, match=r"^peft_type: .* trains the base model's own weights"):
        tuners.apply(_quantized("llama"), _config(peft_type))

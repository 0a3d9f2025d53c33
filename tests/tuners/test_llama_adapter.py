"""LLaMA-Adapter (ADAPTION_PROMPT): identity at init, peft interop both ways, counts, generation, training."""

from __future__ import annotations

import peft
import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import batch, tiny_model
from tests.tuners.synthetic_task import adam_losses
from tuners.config import ConfigError
from tuners.methods.llama_adapter import AdaptionPromptConfig

FAMILIES = ["llama", "gpt2"]


def _perturb(module: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_gate_starts_as_the_base_model(family):
    inputs = batch(family)
    base = tiny_model(family)(**inputs).logits
    tuned = tuners.apply(tiny_model(family), AdaptionPromptConfig(adapter_len=3, adapter_layers=2))
    torch.testing.assert_close(tuned(**inputs).logits, base, atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_our_adapter_loads_in_peft_with_equal_outputs(tmp_path, family):
    tuned = tuners.apply(tiny_model(family), AdaptionPromptConfig(adapter_len=3, adapter_layers=1))
    _perturb(tuned)
    inputs = batch(family)
    ours = tuned(**inputs).logits
    with tuned.disabled():
        assert not torch.allclose(tuned(**inputs).logits, ours, atol=1e-3)
    tuned.save_pretrained(tmp_path)
    reference = peft.get_peft_model(tiny_model(family), peft.AdaptionPromptConfig(
        task_type="CAUSAL_LM", adapter_len=3, adapter_layers=1))
    assert tuned.trainable_parameters() == reference.get_nb_trainable_parameters()
    expected = {k: tuple(v.shape) for k, v in peft.get_peft_model_state_dict(reference).items()}
    assert {k: tuple(v.shape) for k, v in load_file(tmp_path / "adapter_model.safetensors").items()} == expected
    theirs = peft.PeftModel.from_pretrained(tiny_model(family), tmp_path)
    torch.testing.assert_close(ours, theirs(**inputs).logits, atol=1e-5, rtol=1e-5)
    gen = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(tuned.generate(**inputs, **gen), theirs.generate(**inputs, **gen))


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_loads_in_ours_with_equal_outputs(tmp_path, family):
    reference = peft.get_peft_model(tiny_model(family), peft.AdaptionPromptConfig(
        task_type="CAUSAL_LM", adapter_len=4, adapter_layers=2))
    _perturb(reference, seed=2)
    reference.save_pretrained(tmp_path)
    inputs = batch(family)
    ours = tuners.load(tiny_model(family), tmp_path)
    torch.testing.assert_close(ours(**inputs).logits, reference(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_cannot_merge_and_bad_config_names_the_field():
    tuned = tuners.apply(tiny_model("llama"), AdaptionPromptConfig(adapter_len=2))
    with pytest.raises(NotImplementedError):
        tuned.merge_and_unload()
    with pytest.raises(ConfigError, match="adapter_len"):
        AdaptionPromptConfig(adapter_len=0).validate()
    with pytest.raises(ConfigError, match="adapter_layers"):
        tuners.apply(tiny_model("llama"), AdaptionPromptConfig(adapter_layers=5))


@pytest.mark.parametrize("family", FAMILIES)
def test_training_lowers_loss(family):
    torch.manual_seed(0)
    tuned = tuners.apply(tiny_model(family), AdaptionPromptConfig(adapter_len=4, adapter_layers=2))
    inputs = batch(family, texts=("one two three four five", "one two three four five"))
    inputs["labels"] = inputs["input_ids"].clone()
    losses = adam_losses(tuned, inputs, steps=25, lr=0.1)
    assert losses[-1] < losses[0] - 0.05

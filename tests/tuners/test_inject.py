"""The one insertion routine (tuners.inject): a second adapter of a method reuses the first one's layers,
another method's layers are refused by name, and wrappers around wrappers unwind on delete."""

from __future__ import annotations

import pytest
from torch import nn

import tuners
from tests.support.tiny_models import tiny_model
from tuners.layers import AdapterLayer, ModulesToSave
from tuners.methods.lora import LoraLinear

# Every method at its defaults, plus the bottleneck placements whose sites are found from the model's
# structure (a second adapter must find the same sites through the first one's wrappers).
CASES = {p: (p, {}) for p in sorted(tuners.METHODS)}
CASES.update({
    "BOTTLENECK-pfeiffer": ("BOTTLENECK", {"variant": "pfeiffer"}),
    "BOTTLENECK-parallel": ("BOTTLENECK", {"variant": "parallel"}),
    "SSF-ffn": ("SSF", {"placement": "ffn"}),
})


def _config(peft_type: str, overrides: dict) -> tuners.AdapterConfig:
    method = tuners.method_for(peft_type)
    return method.config_cls(**method.with_defaults({"task_type": "CAUSAL_LM", **overrides})).for_run(10)


def _layers(tuned: tuners.TunedModel) -> dict[str, AdapterLayer]:
    return dict(tuned.adapter_layers())


@pytest.mark.parametrize("case_id", list(CASES))
def test_a_second_adapter_at_the_defaults_lands_in_the_first_ones_layers(case_id):
    peft_type, overrides = CASES[case_id]
    family = "gpt2" if peft_type == "BITFIT" else "llama"  # Llama has no biases
    tuned = tuners.apply(tiny_model(family), _config(peft_type, overrides), adapter_name="first")
    first = _layers(tuned)

    tuned.add_adapter("second", _config(peft_type, overrides))

    second = _layers(tuned)
    assert list(second) == list(first)
    assert all(second[name] is layer for name, layer in first.items()), "a wrapper was replaced, not reused"
    assert all(layer.adapter_names == ["first", "second"] for layer in second.values())
    assert tuned.configs["second"].target_modules == tuned.configs["first"].target_modules


def test_lora_refuses_by_name_a_layer_that_another_method_wrapped():
    # UniPELT's gated LoRA layer is a LoraLinear subclass, but not a LoRA layer: LoRA must not add itself to it.
    tuned = tuners.apply(tiny_model("llama"), _config("UNIPELT", {}), adapter_name="hybrid")
    before = _layers(tuned)
    with pytest.raises(tuners.ConfigError, match=r"target_modules: 'model\.layers\.0\.self_attn\.q_proj' is a "
                                                 r"GatedLoraLinear, which this method cannot adapt"):
        tuned.add_adapter("lora", tuners.LoraConfig(r=2, target_modules=["q_proj"]))
    assert _layers(tuned) == before
    assert all(layer.adapter_names == ["hybrid"] for layer in before.values())


def test_a_head_that_is_both_a_lora_target_and_a_module_to_save_unwinds_completely():
    model = tiny_model("llama", "SEQ_CLS")
    tuned = tuners.apply(model, tuners.LoraConfig(r=2, target_modules=["q_proj", "score"], task_type="SEQ_CLS"))
    head = tuned.model.score
    assert isinstance(head, ModulesToSave) and isinstance(head.base_layer, LoraLinear)

    tuned.delete_adapter("default")

    assert not any(isinstance(m, AdapterLayer) for m in tuned.model.modules())
    assert type(tuned.model.score) is nn.Linear
    assert type(tuned.model.model.layers[0].self_attn.q_proj) is nn.Linear

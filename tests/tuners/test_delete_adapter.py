"""Deleting an adapter removes every trace of it, for every method, and leaves the other one as it was.

Two adapters of the same method share wrapper layers; deleting one must drop all of its per-adapter state
(parameters, dropout modules, scales, schedules, bookkeeping), keep the other's outputs and saved tensors
bit for bit, and unwrap a layer once its last adapter is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

import tuners
from tests.support.tiny_models import batch, tiny_model
from tuners.layers import AdapterLayer

KEPT, DOOMED = "kept", "doomed"


@dataclass(frozen=True)
class Case:
    """Two adapters of one method: ``kept`` and ``doomed`` overrides on the method's defaults."""

    peft_type: str
    family: str = "llama"
    task_type: str = "CAUSAL_LM"
    kept: dict = field(default_factory=dict)
    doomed: dict = field(default_factory=dict)


# Every method at its defaults (on the same layers), plus variants that add per-adapter state (DoRA,
# dropouts, embeddings, modules-to-save heads, GPT-2's Conv1D) or give the doomed adapter layers of its own.
CASES = {p: Case(p, family="gpt2" if p == "BITFIT" else "llama") for p in sorted(tuners.METHODS)}  # Llama: no biases
CASES.update({
    "LORA-dora-dropout-own-layers": Case(
        "LORA", kept=dict(target_modules=["q_proj"], use_dora=True, lora_dropout=0.1),
        doomed=dict(target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True, lora_dropout=0.1)),
    "LORA-embedding": Case("LORA", kept=dict(target_modules=["embed_tokens", "q_proj"]),
                           doomed=dict(target_modules=["embed_tokens", "k_proj"])),
    "LORA-seq-cls-head": Case("LORA", family="bert", task_type="SEQ_CLS"),
    "IA3-gpt2": Case("IA3", family="gpt2"),
    "BOTTLENECK-parallel": Case("BOTTLENECK", kept=dict(variant="parallel", adapter_dropout=0.1),
                                doomed=dict(variant="parallel", adapter_dropout=0.1)),
    "LOKR-dropouts-decompose-both": Case(
        "LOKR", kept=dict(r=2, decompose_both=True, rank_dropout=0.1, module_dropout=0.1),
        doomed=dict(r=2, decompose_both=True, rank_dropout=0.1, module_dropout=0.1, target_modules="all-linear")),
    "LOHA-gpt2": Case("LOHA", family="gpt2"),
    "ADALORA-dropout-gpt2": Case("ADALORA", family="gpt2", kept=dict(lora_dropout=0.1), doomed=dict(lora_dropout=0.1)),
})


def _config(case: Case, overrides: dict) -> tuners.AdapterConfig:
    """The method's defaults as a spec naming only the method gets them (AdaLoRA: a 10-step run)."""
    method = tuners.method_for(case.peft_type)
    values = method.with_defaults({"task_type": case.task_type, **overrides})
    return method.config_cls(**values).for_run(10)


def _settle(tuned: tuners.TunedModel, name: str, inputs: dict, seed: int) -> None:
    """Calibrate ``name`` where the method needs data, then move its tensors off their identity init, so
    that "unchanged" below is about a model the adapter really changes."""
    tuned.set_adapter(name)
    if tuned.method.calibrate is not None:
        tuned.method.calibrate(tuned, [{**inputs, "labels": inputs["input_ids"]}])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.adapter_parameters(name).values():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.05)


def _logits(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def holders(root: nn.Module, name: str) -> list[str]:
    """Every place under ``root`` that still holds ``name``: a key or a string value in any module's
    ``__dict__`` and the dicts, lists, tuples and sets inside it (ModuleDict and ParameterDict entries
    live in ``_modules`` / ``_parameters``), following every module reached, also ones held by plain dicts."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(value, where: str) -> None:
        if isinstance(value, str):
            if value == name:
                found.append(where)
            return
        if isinstance(value, torch.Tensor) or id(value) in seen:
            return
        if isinstance(value, nn.Module):
            seen.add(id(value))
            for key, item in vars(value).items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, dict):
            seen.add(id(value))
            for key, item in value.items():
                if key == name:
                    found.append(f"{where}[{key!r}]")
                walk(item, f"{where}[{key!r}]")
        elif isinstance(value, list | tuple | set | frozenset):
            seen.add(id(value))
            for i, item in enumerate(value):
                walk(item, f"{where}<{i}>")

    walk(root, "tuned")
    return found


def test_holders_finds_a_name_left_in_a_plain_dict_of_a_layer():
    tuned = tuners.apply(tiny_model("llama"), _config(CASES["LORA"], {}), adapter_name=KEPT)
    layer = next(m for m in tuned.model.modules() if isinstance(m, AdapterLayer))
    layer.leftover = {DOOMED: 1.0}
    assert holders(tuned, DOOMED) == [
        f"tuned._modules['model']._modules['model']._modules['layers']._modules['0']._modules['self_attn']"
        f"._modules['q_proj'].leftover['{DOOMED}']"
    ]


def test_a_failed_add_leaves_no_trace_of_the_adapter():
    # Layer 0's q_proj takes the adapter (weights, dropout, scale), then its v_proj is wrapped and refuses
    # the rank: the shared q_proj must lose every bit of it and the fresh v_proj wrapper must go.
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=2, target_modules=["q_proj"]), adapter_name=KEPT)
    with pytest.raises(tuners.ConfigError, match="r: 17 is larger than layer model.layers.0.self_attn.v_proj"):
        tuned.add_adapter(DOOMED, tuners.LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                                                    rank_pattern={"v_proj": 17}))
    assert holders(tuned, DOOMED) == []
    assert type(tuned.model.model.layers[0].self_attn.v_proj) is nn.Linear


@pytest.mark.parametrize("delete_active", [True, False], ids=["active", "inactive"])
@pytest.mark.parametrize("case_id", list(CASES))
def test_delete_leaves_no_trace_and_the_other_adapter_unchanged(case_id, delete_active):
    case = CASES[case_id]
    inputs = batch(case.family)
    base = _logits(tiny_model(case.family, case.task_type), inputs)
    kept_config = _config(case, case.kept)
    tuned = tuners.apply(tiny_model(case.family, case.task_type), kept_config, adapter_name=KEPT)
    method = tuned.method
    _settle(tuned, KEPT, inputs, seed=1)
    tuned.add_adapter(DOOMED, _config(case, case.doomed))
    _settle(tuned, DOOMED, inputs, seed=2)
    tuned.eval()  # dropout modules are created in training mode
    assert holders(tuned, DOOMED), "the probe should see the second adapter before it is deleted"
    # The kept adapter's outputs and saved tensors, measured with both adapters in place.
    tuned.set_adapter(KEPT)
    expected = _logits(tuned, inputs)
    assert not torch.equal(expected, base), "the kept adapter should change the model's outputs"
    saved = tuned.adapter_state_dict(KEPT)
    tuned.set_adapter(DOOMED if delete_active else KEPT)

    tuned.delete_adapter(DOOMED)

    assert holders(tuned, DOOMED) == []
    assert tuned.active_adapter == KEPT
    assert all(layer.adapter_names == [KEPT] for _, layer in tuned.adapter_layers()), "a layer kept no adapter"
    torch.testing.assert_close(_logits(tuned, inputs), expected, rtol=0, atol=0)
    after = tuned.adapter_state_dict(KEPT)
    assert list(after) == list(saved)
    for key, value in saved.items():
        assert torch.equal(after[key], value), key

    tuned.delete_adapter(KEPT)
    assert holders(tuned, KEPT) == []
    assert not any(isinstance(m, AdapterLayer) for m in tuned.model.modules()), "a wrapper outlived its adapters"
    if not (method.base_trainables and method.base_trainables(tuned.model, kept_config)):
        torch.testing.assert_close(_logits(tuned, inputs), base, rtol=0, atol=0)

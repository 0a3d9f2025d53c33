"""Every adapter_config.json tuners writes for a method peft has loads in peft's config classes silently.

peft drops keys its config class lacks with an "Unexpected keyword arguments ... ignored" warning, which
users read as a broken or newer-than-peft adapter; peft serves as the oracle here only (tuners never imports
it). Methods peft lacks are named below with the reason, so a new method cannot go unchecked.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import peft
import pytest
import torch
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils.peft_types import PeftType
from torch import nn

import tuners
from tests.support.tiny_models import batch, tiny_model
from tuners.config import AdapterConfig
from tuners.io import config_json
from tuners.methods.adalora import AdaloraConfig
from tuners.methods.ia3 import IA3Config
from tuners.methods.llama_adapter import AdaptionPromptConfig
from tuners.methods.loha import LohaConfig
from tuners.methods.lokr import LokrConfig
from tuners.methods.p_tuning import PromptEncoderConfig
from tuners.methods.prefix_tuning import PrefixTuningConfig
from tuners.methods.prompt_tuning import PromptTuningConfig

PEFT_TYPES = {t.value for t in PeftType} & {str(getattr(k, "value", k)) for k in PEFT_TYPE_TO_CONFIG_MAPPING}

NOT_IN_PEFT = {
    "SSF": "peft 0.21 has no SSF",
    "BOTTLENECK": "peft 0.21 has no bottleneck (Houlsby/Pfeiffer) adapters",
    "BITFIT": "peft 0.21 has no BitFit",
    "LAYER_FREEZE": "layer freezing is a tuners-only baseline",
    "FISHMASK": "peft 0.21 has no FishMask",
    "FULL": "full fine-tuning is a tuners-only baseline",
    "UNIPELT": "peft 0.21 has no UniPELT",
}

Case = tuple[str, str, Callable[[], AdapterConfig]]

CASES: dict[str, list[Case]] = {
    "LORA": [
        ("llama", "CAUSAL_LM", lambda: tuners.LoraConfig(target_modules="attention")),
        ("llama", "CAUSAL_LM", lambda: tuners.LoraConfig(
            target_modules="all-linear", exclude_modules=["o_proj"], modules_to_save=["lm_head"])),
        ("gpt2", "CAUSAL_LM", lambda: tuners.LoraConfig(target_modules="attention", use_dora=True, use_rslora=True, bias="lora_only")),
        ("llama", "CAUSAL_LM", lambda: tuners.LoraConfig(
            target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian", rank_pattern={"q_proj": 4}, alpha_pattern={"v_proj": 2})),
        ("bert", "SEQ_CLS", lambda: tuners.LoraConfig(task_type="SEQ_CLS", target_modules="attention")),
    ],
    "PROMPT_TUNING": [
        ("llama", "CAUSAL_LM", lambda: PromptTuningConfig(num_virtual_tokens=4)),
        ("bert", "SEQ_CLS", lambda: PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4)),
        ("t5", "SEQ_2_SEQ_LM", lambda: PromptTuningConfig(
            task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4, prompt_tuning_init="SAMPLE_VOCAB")),
    ],
    "PREFIX_TUNING": [
        ("llama", "CAUSAL_LM", lambda: PrefixTuningConfig(num_virtual_tokens=4)),
        ("gpt2", "CAUSAL_LM", lambda: PrefixTuningConfig(
            num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=16)),
    ],
    "P_TUNING": [
        ("llama", "CAUSAL_LM", lambda: PromptEncoderConfig(num_virtual_tokens=4)),
        ("gpt2", "CAUSAL_LM", lambda: PromptEncoderConfig(
            num_virtual_tokens=4, encoder_reparameterization_type="LSTM", encoder_hidden_size=8)),
    ],
    "IA3": [
        ("llama", "CAUSAL_LM", lambda: IA3Config()),
        ("gpt2", "CAUSAL_LM", lambda: IA3Config()),
    ],
    "ADALORA": [
        ("llama", "CAUSAL_LM", lambda: AdaloraConfig(target_modules="attention").for_run(100)),
        ("llama", "CAUSAL_LM", lambda: AdaloraConfig(target_modules="all-linear", init_r=6, target_r=2, tinit=10, tfinal=10).for_run(100)),
    ],
    "LOHA": [
        ("llama", "CAUSAL_LM", lambda: LohaConfig(target_modules="attention")),
        ("llama", "CAUSAL_LM", lambda: LohaConfig(target_modules=["q_proj"], r=4, alpha=2, rank_dropout=0.1, module_dropout=0.1)),
    ],
    "LOKR": [
        ("llama", "CAUSAL_LM", lambda: LokrConfig(target_modules="attention")),
        ("llama", "CAUSAL_LM", lambda: LokrConfig(target_modules="all-linear", decompose_both=True, rank_dropout_scale=True)),
    ],
    "ADAPTION_PROMPT": [
        ("llama", "CAUSAL_LM", lambda: AdaptionPromptConfig()),
        ("gpt2", "CAUSAL_LM", lambda: AdaptionPromptConfig(adapter_len=3, adapter_layers=2)),
    ],
}

FLAT_CASES = [
    pytest.param(peft_type, family, task, make, id=f"{peft_type}-{family}-{task}-{i}")
    for peft_type, cases in CASES.items()
    for i, (family, task, make) in enumerate(cases)
]


def _apply(family: str, task: str, config: AdapterConfig) -> tuners.TunedModel:
    return tuners.apply(tiny_model(family, task), config)


def _load_quietly(load: Callable[[str], peft.PeftConfig], folder: Path, caplog) -> peft.PeftConfig:
    """Load with warnings as errors; peft also reports through ``logging``, so no peft warning may be logged."""
    caplog.clear()
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        config = load(str(folder))
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("peft") or "Unexpected keyword" in r.getMessage()]
    assert logged == [], logged
    return config


def test_the_methods_peft_lacks_are_exactly_those_listed():
    ours = set(tuners.METHODS)
    assert set(NOT_IN_PEFT) <= ours, f"stale entries: {sorted(set(NOT_IN_PEFT) - ours)}"
    assert ours - PEFT_TYPES == set(NOT_IN_PEFT)
    for peft_type, method in tuners.METHODS.items():
        assert method.peft_compatible == (peft_type in PEFT_TYPES), peft_type


@pytest.mark.parametrize("peft_type", list(tuners.METHODS))
def test_every_method_peft_has_is_checked(peft_type: str):
    if peft_type in NOT_IN_PEFT:
        pytest.skip(NOT_IN_PEFT[peft_type])
    assert CASES.get(peft_type), f"{peft_type}: add a case to CASES so its saved config is checked against peft"


@pytest.mark.parametrize(("peft_type", "family", "task", "make"), FLAT_CASES)
def test_saved_config_loads_in_peft_without_unexpected_keys(
    peft_type: str, family: str, task: str, make: Callable[[], AdapterConfig], tmp_path: Path, caplog
):
    config = make()
    assert config.peft_type == peft_type
    tuned = _apply(family, task, config)
    tuned.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    peft_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    accepted = set(inspect.signature(peft_cls.__init__).parameters) - {"self"}
    assert set(written) - accepted == set(), f"keys {peft_cls.__name__} lacks"
    for load in (peft.PeftConfig.from_pretrained, peft_cls.from_pretrained):
        loaded = _load_quietly(load, tmp_path, caplog)
        assert type(loaded) is peft_cls
        assert loaded.peft_type == peft_type
    assert tuned.method.peft_loads(tuned, "default") == (True, None)


@pytest.mark.parametrize("peft_type", sorted(NOT_IN_PEFT))
def test_methods_peft_lacks_write_every_field(peft_type: str):
    config_cls = tuners.METHODS[peft_type].config_cls
    written = json.loads(config_json(config_cls()))
    assert set(written) == {f.name for f in dataclasses.fields(config_cls)} | {"peft_type"}


def _perturb(module: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_llama_adapter_saved_without_tuners_only_keys_round_trips(family: str, tmp_path: Path):
    tuned = _apply(family, "CAUSAL_LM", AdaptionPromptConfig(adapter_len=3, adapter_layers=2))
    _perturb(tuned)
    tuned.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert "modules_to_save" not in written and "exclude_modules" not in written
    loaded = tuners.load(tiny_model(family), tmp_path)
    assert loaded.configs["default"] == tuned.configs["default"]
    inputs = batch(family)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)


def test_a_tuners_only_value_a_load_needs_is_kept_and_peft_is_said_not_to_load_it(tmp_path: Path):
    """Dropping a set ``modules_to_save`` would lose the saved head on load; peft cannot honour it either."""
    tuned = _apply("llama", "CAUSAL_LM", AdaptionPromptConfig(adapter_len=3, modules_to_save=["lm_head"]))
    _perturb(tuned)
    tuned.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] == ["lm_head"]
    ok, reason = tuned.method.peft_loads(tuned, "default")
    assert not ok and "modules_to_save" in reason
    assert "peft cannot load this adapter" in (tmp_path / "README.md").read_text()
    loaded = tuners.load(tiny_model("llama"), tmp_path)
    inputs = batch("llama")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)

"""Interop with peft (test-only oracle): folders move both ways with no key lost and equal logits.

Each case is one adapter configuration on one tiny family. Adapters are perturbed before saving so a
silently missing key (peft keeps B = 0 and warns) shows up as different logits.
"""

from __future__ import annotations

import peft
import pytest
import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import batch, tiny_model

CASES = {
    "llama-lora": ("llama", "CAUSAL_LM", dict(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8)),
    "llama-rslora-patterns": (
        "llama",
        "CAUSAL_LM",
        dict(
            target_modules="all-linear", r=4, lora_alpha=8, use_rslora=True,
            rank_pattern={"q_proj": 2, r"layers\.1\.mlp\.down_proj": 6}, alpha_pattern={"v_proj": 3},
        ),
    ),
    "llama-dora": ("llama", "CAUSAL_LM", dict(target_modules=["q_proj", "k_proj", "down_proj"], r=4, use_dora=True)),
    "llama-embedding": ("llama", "CAUSAL_LM", dict(target_modules=["embed_tokens", "o_proj"], r=4, lora_alpha=4)),
    "llama-gaussian-modules-to-save": (
        "llama", "CAUSAL_LM",
        dict(target_modules=["q_proj"], r=2, init_lora_weights="gaussian", modules_to_save=["lm_head"]),
    ),
    "gpt2-conv1d-bias-all": ("gpt2", "CAUSAL_LM", dict(target_modules=["c_attn", "c_proj"], r=4, bias="all")),
    "gpt2-dora-conv1d": ("gpt2", "CAUSAL_LM", dict(target_modules=["c_attn", "c_fc"], r=4, use_dora=True)),
    "gpt2-seqcls-lora-only": ("gpt2", "SEQ_CLS", dict(target_modules=["c_attn"], r=4, bias="lora_only")),
    "bert-seqcls": ("bert", "SEQ_CLS", dict(target_modules=["query", "value"], r=4, lora_alpha=8)),
    "bert-seqcls-bias-all-dora": (
        "bert", "SEQ_CLS", dict(target_modules=["query", "value", "dense"], r=4, bias="all", use_dora=True),
    ),
    "bert-tokencls-lora-only": (
        "bert", "TOKEN_CLS", dict(target_modules=["query", "key", "value"], r=4, bias="lora_only"),
    ),
    "bert-embedding-modules-to-save": (
        "bert", "SEQ_CLS",
        dict(target_modules=["word_embeddings", "query"], r=4, modules_to_save=["pooler"]),
    ),
    "t5-seq2seq": ("t5", "SEQ_2_SEQ_LM", dict(target_modules=["q", "v"], r=4, lora_alpha=8)),
    "t5-seq2seq-bias-all-rslora": (
        "t5", "SEQ_2_SEQ_LM", dict(target_modules="all-linear", r=4, bias="all", use_rslora=True),
    ),
}


def _inputs(family: str, task: str) -> dict[str, torch.Tensor]:
    inputs = batch(family)
    if task == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :4]
    return inputs


def _perturb(params, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _peft_config(task: str, kwargs: dict) -> peft.LoraConfig:
    return peft.LoraConfig(task_type=task, **kwargs)


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_saved_by_tuners_loads_in_peft(case, tmp_path):
    family, task, kwargs = CASES[case]
    inputs = _inputs(family, task)
    tuned = tuners.apply(tiny_model(family, task), tuners.LoraConfig(task_type=task, **kwargs))
    _perturb(tuned.adapter_parameters().values())
    tuned.save_pretrained(tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))

    loaded = peft.PeftModel.from_pretrained(tiny_model(family, task), tmp_path / "adapter").eval()
    peft_state = get_peft_model_state_dict(loaded, save_embedding_layers=False)
    # Everything peft would save is in our file, except keys peft itself cannot load back.
    peft_own_unloadable = set(peft.set_peft_model_state_dict(loaded, dict(peft_state)).unexpected_keys)
    assert sorted(saved) == sorted(set(peft_state) - peft_own_unloadable)
    for key, value in saved.items():
        torch.testing.assert_close(peft_state[key], value, rtol=0, atol=0, msg=key)
    assert peft.set_peft_model_state_dict(loaded, saved).unexpected_keys == []
    with torch.no_grad():
        expected = tuned.eval()(**inputs).logits
        got = loaded(**inputs).logits
        base = tiny_model(family, task)(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-4)  # the perturbed adapter really acts


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_saved_by_peft_loads_in_tuners(case, tmp_path):
    family, task, kwargs = CASES[case]
    inputs = _inputs(family, task)
    made = peft.get_peft_model(tiny_model(family, task), _peft_config(task, kwargs))
    _perturb([p for p in made.parameters() if p.requires_grad])
    made.save_pretrained(tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))

    tuned = tuners.load(tiny_model(family, task), tmp_path / "adapter").eval()
    ours = tuned.adapter_state_dict()
    # peft may add keys it drops itself on load and full embedding tables (save_embedding_layers).
    peft_extra = set(peft.set_peft_model_state_dict(made, dict(saved)).unexpected_keys)
    peft_extra |= {k for k in saved if k.endswith("embed_tokens.base_layer.weight")}
    assert sorted(ours) == sorted(set(saved) - peft_extra)
    for key, value in ours.items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    with torch.no_grad():
        expected = made.eval()(**inputs).logits
        got = tuned(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_parameter_counts_equal_peft(case):
    family, task, kwargs = CASES[case]
    tuned = tuners.apply(tiny_model(family, task), tuners.LoraConfig(task_type=task, **kwargs))
    # Same heads on both sides: tuners also trains a BERT classifier's pooler, which peft adds only
    # when told (modules_to_save), and then loads as it does the classifier.
    heads = {"modules_to_save": tuned.config.modules_to_save} if tuned.config.modules_to_save else {}
    reference = peft.get_peft_model(tiny_model(family, task), _peft_config(task, {**kwargs, **heads}))
    assert tuned.trainable_parameters() == reference.get_nb_trainable_parameters()

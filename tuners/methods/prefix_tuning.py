"""Prefix tuning (peft_type ``PREFIX_TUNING``): learned keys and values in front of every attention layer.

Prefix tuning (Li & Liang, 2021) learns, for each layer l, nvt key and value vectors that every query
can attend to; the model is untouched. A table T (nvt × L·2·d) (or T = W₂ tanh(W₁ X + b₁) + b₂ with the
reparameterization MLP, X of nvt × d) is viewed as (batch, nvt, 2L, heads, d/heads) and permuted so
layer l takes key row 2l and value row 2l+1. It reaches the model as a transformers ``Cache`` already
holding nvt positions: a ``DynamicCache`` for decoder-only and encoder models, an
``EncoderDecoderCache`` (decoder self-attention) for encoder-decoder models. For grouped-query
attention d = kv_heads·head_dim and heads = kv_heads. The attention mask gets nvt leading ones;
explicit position ids are shifted by nvt.

peft saves T itself (``prompt_embeddings``, the MLP's output when it is used); a loaded adapter holds T
directly and skips the MLP, as peft's inference mode does.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache

from tuners.config import ConfigError, default_field
from tuners.method import Method
from tuners.methods.prompt_tuning import (
    PROMPT_KEY,
    PromptLearningConfig,
    _batch_size,
    _ones,
    _take_prompt_key,
    fill_model_dims,
    word_embeddings,
)

if TYPE_CHECKING:
    from tuners.model import TunedModel


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    peft_type = "PREFIX_TUNING"

    encoder_hidden_size: int | None = default_field(None, "Hidden width of the reparameterization MLP.")
    prefix_projection: bool = default_field(False, "Produce the prefix with a tanh MLP (more stable training).")

    def validate(self) -> None:
        super().validate()
        if self.encoder_hidden_size is not None and (
            not isinstance(self.encoder_hidden_size, int) or self.encoder_hidden_size <= 0
        ):
            raise ConfigError(f"encoder_hidden_size: must be a positive integer, got {self.encoder_hidden_size!r}")
        if not isinstance(self.prefix_projection, bool):
            raise ConfigError(f"prefix_projection: must be true or false, got {self.prefix_projection!r}")
        if self.token_dim and self.num_attention_heads and self.token_dim % self.num_attention_heads:
            raise ConfigError(
                f"token_dim: {self.token_dim} is not divisible by num_attention_heads {self.num_attention_heads}"
            )


def fill_prefix_dims(model: nn.Module, config: PrefixTuningConfig) -> None:
    """Model dimensions as peft computes them; GQA models get kv_heads × head_dim keys and values."""
    fill_model_dims(model, config)
    mc = getattr(model, "config", None)
    if hasattr(mc, "get_text_config"):
        mc = mc.get_text_config()
    kv_heads = getattr(mc, "num_key_value_heads", None)
    if kv_heads is not None:
        head_dim = getattr(mc, "head_dim", None) or config.token_dim // config.num_attention_heads
        config.token_dim = head_dim * kv_heads
        config.num_attention_heads = kv_heads
    if config.encoder_hidden_size is None:
        config.encoder_hidden_size = config.token_dim
    if config.token_dim % config.num_attention_heads:
        raise ConfigError(f"token_dim: {config.token_dim} is not divisible by num_attention_heads")


class PrefixEncoder(nn.Module):
    """Produces the key/value table T (nvt × L·2·d); ``direct`` after loading T itself."""

    def __init__(self, config: PrefixTuningConfig) -> None:
        super().__init__()
        self.num_virtual_tokens = config.num_virtual_tokens
        self.num_layers = config.num_layers
        self.heads = config.num_attention_heads
        self.head_dim = config.token_dim // config.num_attention_heads
        self.submodules = config.num_transformer_submodules
        out = config.num_layers * 2 * config.token_dim
        self.transform: nn.Sequential | None = None
        if config.prefix_projection:
            self.embedding = nn.Embedding(config.num_virtual_tokens, config.token_dim)
            self.transform = nn.Sequential(
                nn.Linear(config.token_dim, config.encoder_hidden_size),
                nn.Tanh(),
                nn.Linear(config.encoder_hidden_size, out),
            )
        else:
            self.embedding = nn.Embedding(config.num_virtual_tokens, out)

    def table(self) -> torch.Tensor:
        if self.transform is None:
            return self.embedding.weight
        return self.transform(self.embedding.weight)

    def key_values(self, batch_size: int, dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (key, value), each (batch, heads, nvt, head_dim)."""
        table = self.table()
        if dtype is not None:
            table = table.to(dtype)
        kv = table.unsqueeze(0).expand(batch_size, -1, -1)
        kv = kv.reshape(batch_size, self.num_virtual_tokens, self.num_layers * 2, self.heads, self.head_dim)
        kv = kv.permute(2, 0, 3, 1, 4)
        # Encoder-decoder: peft doubles the rows and hands out groups of four (self k, v; cross k, v), so
        # layer i's self-attention reads rows 4i, 4i+1 modulo 2L. Mirrored so adapters mean the same.
        step = 2 * self.submodules
        rows = 2 * self.num_layers
        return [(kv[(step * i) % rows], kv[(step * i + 1) % rows]) for i in range(self.num_layers)]

    def cache(self, batch_size: int, dtype: torch.dtype | None = None) -> DynamicCache | EncoderDecoderCache:
        layers = self.key_values(batch_size, dtype)
        if self.submodules == 2:
            self_cache = DynamicCache(layers)
            cache = EncoderDecoderCache(self_cache, DynamicCache())
            for key in cache.is_updated:
                cache.is_updated[key] = False
            return cache
        return DynamicCache(layers)

    def use_table(self, table: torch.Tensor) -> None:
        """Hold T itself from now on (peft's inference mode after loading ``prompt_embeddings``)."""
        self.transform = None
        self.embedding = nn.Embedding.from_pretrained(table.detach().clone().float(), freeze=False).to(
            self.embedding.weight.device
        )


def export_state(module: PrefixEncoder) -> dict[str, torch.Tensor]:
    return {PROMPT_KEY: module.table()}


def import_state(module: PrefixEncoder, state: dict[str, torch.Tensor]) -> None:
    width = module.num_layers * 2 * module.heads * module.head_dim
    module.use_table(_take_prompt_key(state, (module.num_virtual_tokens, width)))


# --------------------------------------------------------------------------- running
def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


CACHE_KEYWORDS = ("cache", "past_key_values")


def cache_keyword(module: nn.Module) -> str | None:
    """The name under which ``module.forward`` takes a transformers cache, or None if it takes none.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name is deprecated); reading the
    signature follows whichever release is installed instead of pinning one spelling.
    """
    parameters = inspect.signature(module.forward).parameters
    return next((name for name in CACHE_KEYWORDS if name in parameters), None)


def prefix_forward(tuned: TunedModel, adapter_name: str, kwargs: dict[str, Any]) -> Any:
    config = tuned.configs[adapter_name]
    module: PrefixEncoder = tuned.adapter_modules[adapter_name]
    model = tuned.model
    kwargs = dict(kwargs)
    batch_size = _batch_size(kwargs)
    nvt = config.num_virtual_tokens
    if config.task_type == "SEQ_2_SEQ_LM":
        if kwargs.get("decoder_attention_mask") is not None:
            mask = kwargs["decoder_attention_mask"]
            kwargs["decoder_attention_mask"] = torch.cat((_ones(batch_size, nvt, mask), mask), 1)
    elif kwargs.get("attention_mask") is not None:
        kwargs["attention_mask"] = torch.cat((_ones(batch_size, nvt, kwargs["attention_mask"]), kwargs["attention_mask"]), 1)
    if kwargs.get("position_ids") is not None:
        kwargs["position_ids"] = kwargs["position_ids"] + nvt
    if config.task_type != "SEQ_CLS" and kwargs.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = None
    cache = module.cache(batch_size, _model_dtype(model))
    keyword = cache_keyword(model)
    if keyword is not None:
        return model(**kwargs, **{keyword: cache})
    return _classify_through_backbone(model, kwargs, cache)


def _classify_through_backbone(model: nn.Module, kwargs: dict[str, Any], cache: Any) -> Any:
    """Encoder classifiers (BERT) take no cache themselves: run their backbone with it, then the head (as peft)."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    labels = kwargs.pop("labels", None)
    return_dict = kwargs.pop("return_dict", None)
    backbone_name = getattr(model, "base_model_prefix", "")
    backbone = getattr(model, backbone_name, None)
    head = getattr(model, "classifier", None) or getattr(model, "score", None)
    keyword = cache_keyword(backbone) if backbone is not None else None
    if keyword is None or head is None:
        raise ConfigError(f"task_type: {type(model).__name__} does not accept a prefix cache (no cache argument)")
    outputs = backbone(**kwargs, **{keyword: cache})
    pooled = outputs[1] if len(outputs) > 1 else outputs[0]
    if isinstance(getattr(model, "dropout", None), nn.Module):
        pooled = model.dropout(pooled)
    logits = head(pooled)
    loss = None
    if labels is not None:
        num_labels = model.num_labels
        if num_labels == 1:
            loss = nn.functional.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        elif labels.dtype in (torch.long, torch.int):
            loss = nn.functional.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        else:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if return_dict is False:
        return ((loss,) if loss is not None else ()) + (logits,)
    return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                    attentions=outputs.attentions)


def prefix_generate(tuned: TunedModel, adapter_name: str, kwargs: dict[str, Any]) -> Any:
    """Generate with the prefix injected into the first step's cache (peft's prepare_inputs_for_generation)."""
    config = tuned.configs[adapter_name]
    module: PrefixEncoder = tuned.adapter_modules[adapter_name]
    model = tuned.model
    nvt = config.num_virtual_tokens
    original = model.prepare_inputs_for_generation
    seq2seq = config.task_type == "SEQ_2_SEQ_LM"
    keyword = cache_keyword(model) or "past_key_values"

    def prepare(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = original(input_ids, *args, **kwargs)
        if seq2seq:
            if kwargs.get("is_first_iteration"):
                batch = inputs["decoder_input_ids"].shape[0]
                inputs[keyword] = module.cache(batch, _model_dtype(model))
            return inputs
        cache = inputs.get(keyword)
        prefill = inputs.get("cache_position") is not None and int(inputs["cache_position"][0]) == 0
        if cache is not None and cache.get_seq_length() >= inputs["input_ids"].shape[1]:
            inputs["input_ids"] = inputs["input_ids"][:, -1:]
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            inputs["attention_mask"] = torch.cat((_ones(mask.shape[0], nvt, mask), mask), 1)
        if inputs.get("position_ids") is not None:
            inputs["position_ids"] = inputs["position_ids"] + nvt
        if cache is None or not cache.get_seq_length():
            inputs[keyword] = module.cache(inputs["input_ids"].shape[0], _model_dtype(model))
        if prefill:
            inputs["cache_position"] = inputs["cache_position"] + nvt
        return inputs

    model.prepare_inputs_for_generation = prepare
    try:
        return model.generate(**kwargs)
    finally:
        del model.prepare_inputs_for_generation


# --------------------------------------------------------------------------- injection
def inject(model: nn.Module, config: PrefixTuningConfig, adapter_name: str) -> PrefixEncoder:
    fill_prefix_dims(model, config)
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        raise ConfigError("prefix tuning does not work with gradient checkpointing; turn it off")
    return PrefixEncoder(config).to(word_embeddings(model).weight.device)


METHOD = Method(
    peft_type="PREFIX_TUNING",
    name="Prefix tuning",
    family="additive",
    config_cls=PrefixTuningConfig,
    inject=inject,
    forward=prefix_forward,
    generate=prefix_generate,
    export_state=export_state,
    import_state=import_state,
    key_prefix="base_model.",
    summary="Learned keys and values prepended in every attention layer, fed as a transformers cache.",
    learning_rate=1e-2,
    learning_rate_range=(1e-3, 3e-2),
)

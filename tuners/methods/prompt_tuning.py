"""Prompt tuning (peft_type ``PROMPT_TUNING``) and the machinery every soft-prompt method shares.

Prompt tuning (Lester et al., 2021) learns ``num_virtual_tokens`` input vectors P that are prepended
to the token embeddings of every example; the base model is untouched:

    model(inputs_embeds = [P ; E[input_ids]],  attention_mask = [1 … 1 ; mask],  labels = [-100 … ; labels])

P starts from the embeddings of tokens sampled from the vocabulary (the default here), from the
embeddings of an init text's tokens (repeated or cut to length), or random (N(0, 1), peft's default).
Lester et al. found sampled-vocabulary starts better than random ones, the more so the smaller the
model; on the drug-review demo with MiniLM random ones stayed at the majority class (docs/runs.md).
P-tuning (``p_tuning.py``) reuses this module's forward with P produced by an encoder. Everything here
mirrors peft's PeftModel so a saved ``prompt_embeddings`` (nvt·n_sub × token_dim) means the same thing
in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.method import Method

if TYPE_CHECKING:
    from tuners.model import TunedModel

INIT_MODES = ("RANDOM", "TEXT", "SAMPLE_VOCAB")
PROMPT_TASKS = ("CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM", "FEATURE_EXTRACTION")
PROMPT_KEY = "prompt_embeddings"


@dataclass
class PromptLearningConfig(AdapterConfig):
    """Fields of every soft-prompt method; the model dimensions are filled in from the model when applied."""

    num_virtual_tokens: int = default_field(20, "Number of learned virtual tokens prepended to every input.")
    token_dim: int | None = default_field(None, "Width of a virtual token (default: the model's hidden size).")
    num_transformer_submodules: int | None = default_field(
        None, "1 for decoder-only/encoder models, 2 for encoder-decoder (default: from the task type)."
    )
    num_attention_heads: int | None = default_field(None, "Attention heads of the model (default: from its config).")
    num_layers: int | None = default_field(None, "Transformer layers of the model (default: from its config).")
    # peft's prompt-learning configs have neither: a soft prompt targets no layers.
    target_modules: list[str] | str | None = default_field(None, tuners_only=True)
    exclude_modules: list[str] | str | None = default_field(None, tuners_only=True)

    def validate(self) -> None:
        super().validate()
        if self.task_type not in PROMPT_TASKS:
            raise ConfigError(f"task_type: soft prompts support {', '.join(PROMPT_TASKS)}, got {self.task_type!r}")
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens <= 0:
            raise ConfigError(f"num_virtual_tokens: must be a positive integer, got {self.num_virtual_tokens!r}")
        for name in ("token_dim", "num_attention_heads", "num_layers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name}: must be a positive integer or empty, got {value!r}")
        if self.num_transformer_submodules not in (None, 1, 2):
            raise ConfigError(f"num_transformer_submodules: must be 1 or 2, got {self.num_transformer_submodules!r}")

    @property
    def total_virtual_tokens(self) -> int:
        return self.num_virtual_tokens * (self.num_transformer_submodules or 1)


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    peft_type = "PROMPT_TUNING"
    peft_defaults = {"prompt_tuning_init": "RANDOM"}

    prompt_tuning_init: str = default_field(
        "SAMPLE_VOCAB", "Initial prompt: RANDOM (normal), TEXT (embeddings of an init text), SAMPLE_VOCAB (random tokens).",
        choices=INIT_MODES,
    )
    prompt_tuning_init_text: str | None = default_field(None, "Text whose token embeddings start the prompt (TEXT).")
    tokenizer_name_or_path: str | None = default_field(None, "Tokenizer (local path or hub id) for the init text.")
    tokenizer_kwargs: dict | None = default_field(None, "Extra tokenizer options for the init text.")

    def validate(self) -> None:
        super().validate()
        if self.prompt_tuning_init not in INIT_MODES:
            raise ConfigError(f"prompt_tuning_init: must be one of {INIT_MODES}, got {self.prompt_tuning_init!r}")
        if self.prompt_tuning_init == "TEXT":
            if not self.prompt_tuning_init_text:
                raise ConfigError("prompt_tuning_init_text: required when prompt_tuning_init is TEXT")
            if not self.tokenizer_name_or_path:
                raise ConfigError("tokenizer_name_or_path: required when prompt_tuning_init is TEXT")


# --------------------------------------------------------------------------- model dimensions
def fill_model_dims(model: nn.Module, config: PromptLearningConfig) -> None:
    """Complete the config's dimensions from the model's config, as peft does (written to the adapter config)."""
    mc = getattr(model, "config", None)
    if hasattr(mc, "get_text_config"):
        mc = mc.get_text_config()

    def first(*names: str) -> Any:
        for name in names:
            value = getattr(mc, name, None)
            if value is not None:
                return value
        return None

    if config.num_transformer_submodules is None:
        config.num_transformer_submodules = 2 if config.task_type == "SEQ_2_SEQ_LM" else 1
    for field_name, names in (
        ("num_layers", ("num_hidden_layers", "num_layers", "n_layer")),
        ("token_dim", ("hidden_size", "n_embd", "d_model")),
        ("num_attention_heads", ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")),
    ):
        if getattr(config, field_name) is None:
            value = first(*names)
            if value is None:
                raise ConfigError(f"{field_name}: cannot read it from the model's config; set it explicitly")
            setattr(config, field_name, int(value))


def word_embeddings(model: nn.Module) -> nn.Module:
    """The token embedding table the soft prompt lives beside."""
    try:
        return model.get_submodule("embeddings.word_embeddings")
    except AttributeError:
        pass
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if getter is not None else None
    if embedding is None:
        raise ConfigError("task_type: cannot find the model's input embeddings for a soft prompt")
    return embedding


# --------------------------------------------------------------------------- the prompt module
class SoftPrompt(nn.Module):
    """The prompt table P (total_virtual_tokens × token_dim); ``prompts(batch)`` repeats it per example."""

    def __init__(self, config: PromptTuningConfig, embeddings: nn.Module) -> None:
        super().__init__()
        total = config.total_virtual_tokens
        self.embedding = nn.Embedding(total, config.token_dim)
        if embeddings.weight.is_meta:  # a shape-only model (the studio's trainable count): no values to copy
            return
        init_ids = _init_token_ids(config, embeddings.weight.shape[0], total)
        if init_ids is not None:
            with torch.no_grad():
                ids = init_ids.to(embeddings.weight.device)
                self.embedding.weight.copy_(embeddings(ids).detach().float())

    def prompt_table(self) -> torch.Tensor:
        return self.embedding.weight

    def prompts(self, batch_size: int) -> torch.Tensor:
        return self.prompt_table().unsqueeze(0).expand(batch_size, -1, -1)


def _init_token_ids(config: PromptTuningConfig, vocab_size: int, total: int) -> torch.Tensor | None:
    if config.prompt_tuning_init == "SAMPLE_VOCAB":
        return torch.randint(0, vocab_size, (total,), dtype=torch.long)
    if config.prompt_tuning_init != "TEXT":
        return None
    from transformers import AutoTokenizer  # only needed for text init; the core otherwise avoids tokenizers

    kwargs = dict(config.tokenizer_kwargs or {})
    kwargs.pop("trust_remote_code", None)
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **kwargs)
    ids = tokenizer(config.prompt_tuning_init_text)["input_ids"]
    if not ids:
        raise ConfigError("prompt_tuning_init_text: the text has no tokens")
    ids = (ids * math.ceil(total / len(ids)))[:total]
    return torch.tensor(ids, dtype=torch.long)


def export_table(module: nn.Module) -> dict[str, torch.Tensor]:
    """peft saves what the encoder produces (for prompt tuning, the table itself)."""
    return {PROMPT_KEY: module.prompt_table()}


def import_table(module: SoftPrompt, state: dict[str, torch.Tensor]) -> None:
    table = _take_prompt_key(state, tuple(module.embedding.weight.shape))
    with torch.no_grad():
        module.embedding.weight.copy_(table.to(module.embedding.weight.dtype))


def _take_prompt_key(state: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    from tuners.model import AdapterLoadError

    if PROMPT_KEY not in state:
        raise AdapterLoadError([PROMPT_KEY], sorted(state))
    extra = sorted(set(state) - {PROMPT_KEY})
    if extra:
        raise AdapterLoadError([], extra)
    table = state[PROMPT_KEY]
    if tuple(table.shape) != shape:
        raise AdapterLoadError([], [], f"{PROMPT_KEY}: saved shape {tuple(table.shape)} != {shape}")
    return table


# --------------------------------------------------------------------------- running
def _batch_size(kwargs: dict[str, Any]) -> int:
    for key in ("input_ids", "inputs_embeds"):
        if kwargs.get(key) is not None:
            return kwargs[key].shape[0]
    raise ValueError("soft-prompt adapters need input_ids or inputs_embeds")


def _ones(batch_size: int, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(batch_size, n, dtype=like.dtype, device=like.device)


def prompt_forward(tuned: TunedModel, adapter_name: str, kwargs: dict[str, Any]) -> Any:
    """peft's PeftModel forward for input-level soft prompts (prompt tuning, P-tuning)."""
    config = tuned.configs[adapter_name]
    module = tuned.adapter_modules[adapter_name]
    kwargs = dict(kwargs)
    batch_size = _batch_size(kwargs)
    nvt = config.num_virtual_tokens
    input_ids = kwargs.pop("input_ids", None)
    inputs_embeds = kwargs.pop("inputs_embeds", None)
    if inputs_embeds is None:
        inputs_embeds = word_embeddings(tuned.model)(input_ids)
    if kwargs.get("attention_mask") is not None:
        kwargs["attention_mask"] = torch.cat((_ones(batch_size, nvt, kwargs["attention_mask"]), kwargs["attention_mask"]), 1)
    if kwargs.get("position_ids") is not None:
        kwargs["position_ids"] = None  # peft ignores position ids for soft prompts
    token_type_ids = kwargs.get("token_type_ids")
    if token_type_ids is not None:
        if config.task_type == "SEQ_CLS":
            kwargs["token_type_ids"] = torch.cat((torch.zeros_like(token_type_ids[:, :1]).expand(-1, nvt), token_type_ids), 1)
        else:
            kwargs["token_type_ids"] = None
    if config.task_type == "CAUSAL_LM" and kwargs.get("labels") is not None:
        labels = kwargs["labels"]
        kwargs["labels"] = torch.cat((torch.full_like(labels[:, :1], -100).expand(-1, nvt), labels), 1)
    prompts = module.prompts(batch_size).to(inputs_embeds.dtype)[:, :nvt]
    return tuned.model(inputs_embeds=torch.cat((prompts, inputs_embeds), 1), **kwargs)


def prompt_generate(tuned: TunedModel, adapter_name: str, kwargs: dict[str, Any]) -> Any:
    """Generate with the prompt prepended; causal LMs return the input ids followed by the new tokens, as peft does."""
    config = tuned.configs[adapter_name]
    module = tuned.adapter_modules[adapter_name]
    kwargs = dict(kwargs)
    input_ids = kwargs.pop("input_ids", None)
    if input_ids is None:
        raise ValueError("generate with a soft prompt needs input_ids")
    batch_size, nvt = input_ids.shape[0], config.num_virtual_tokens
    embeds = word_embeddings(tuned.model)(input_ids)
    prompts = module.prompts(batch_size).to(embeds.dtype)[:, :nvt]
    kwargs["inputs_embeds"] = torch.cat((prompts, embeds), 1)
    mask = kwargs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    kwargs["attention_mask"] = torch.cat((_ones(batch_size, nvt, mask), mask), 1)
    kwargs.pop("position_ids", None)
    out = tuned.model.generate(**kwargs)
    if config.task_type == "CAUSAL_LM":
        out = torch.cat((input_ids, out), 1)
    return out


# --------------------------------------------------------------------------- injection
def inject(model: nn.Module, config: PromptTuningConfig, adapter_name: str) -> SoftPrompt:
    fill_model_dims(model, config)
    embeddings = word_embeddings(model)
    module = SoftPrompt(config, embeddings)
    return module.to(embeddings.weight.device)


METHOD = Method(
    peft_type="PROMPT_TUNING",
    name="Prompt tuning",
    family="additive",
    config_cls=PromptTuningConfig,
    inject=inject,
    forward=prompt_forward,
    generate=prompt_generate,
    export_state=export_table,
    import_state=import_table,
    key_prefix="base_model.",
    summary="Learned virtual tokens prepended to the input embeddings; the model itself is untouched.",
    learning_rate=3e-2,
    learning_rate_range=(1e-2, 3e-1),
)

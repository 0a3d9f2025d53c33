"""P-tuning (peft_type ``P_TUNING``): soft prompts produced by a small trained encoder.

P-tuning (Liu et al., 2021) reparameterises the prompt: a table X (nvt × d) passes through an encoder
and the encoder's output is what is prepended to the input embeddings (see ``prompt_tuning.py``):

    MLP:   P = W₃ relu(W₂ relu(W₁ X + b₁) + b₂) + b₃            (d → h → h → d)
    LSTM:  P = W₂ relu(W₁ biLSTM(X) + b₁) + b₂                   (d → 2h → 2h → d)

Only P is saved (``prompt_embeddings``), as peft does. A loaded adapter therefore holds P directly and
skips the encoder (peft's inference mode); training it further trains P itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import ConfigError, default_field
from tuners.method import Method
from tuners.methods.prompt_tuning import (
    PROMPT_KEY,
    PromptLearningConfig,
    _take_prompt_key,
    fill_model_dims,
    prompt_forward,
    prompt_generate,
    word_embeddings,
)

ENCODER_TYPES = ("MLP", "LSTM")


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    peft_type = "P_TUNING"

    encoder_reparameterization_type: str = default_field(
        "MLP", "Prompt encoder: MLP (recommended) or LSTM.", choices=ENCODER_TYPES
    )
    encoder_hidden_size: int | None = default_field(None, "Hidden width of the encoder (default: the token width).")
    encoder_num_layers: int = default_field(2, "LSTM layers (the MLP always has 3 linear layers).")
    encoder_dropout: float = default_field(0.0, "Dropout between LSTM layers.")

    def validate(self) -> None:
        super().validate()
        if self.encoder_reparameterization_type not in ENCODER_TYPES:
            raise ConfigError(
                f"encoder_reparameterization_type: must be one of {ENCODER_TYPES}, "
                f"got {self.encoder_reparameterization_type!r}"
            )
        if self.encoder_hidden_size is not None and (
            not isinstance(self.encoder_hidden_size, int) or self.encoder_hidden_size <= 0
        ):
            raise ConfigError(f"encoder_hidden_size: must be a positive integer, got {self.encoder_hidden_size!r}")
        if not isinstance(self.encoder_num_layers, int) or self.encoder_num_layers <= 0:
            raise ConfigError(f"encoder_num_layers: must be a positive integer, got {self.encoder_num_layers!r}")
        if not 0.0 <= float(self.encoder_dropout) < 1.0:
            raise ConfigError(f"encoder_dropout: must be in [0, 1), got {self.encoder_dropout!r}")


class PromptEncoder(nn.Module):
    """X → P through an MLP or a bi-LSTM + MLP head; ``direct`` after loading P itself (no encoder)."""

    def __init__(self, config: PromptEncoderConfig) -> None:
        super().__init__()
        d, h = config.token_dim, config.encoder_hidden_size
        self.encoder_type = config.encoder_reparameterization_type
        self.embedding = nn.Embedding(config.total_virtual_tokens, d)
        self.lstm_head: nn.LSTM | None = None
        self.mlp_head: nn.Sequential | None
        if self.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(
                input_size=d, hidden_size=h, num_layers=config.encoder_num_layers,
                dropout=config.encoder_dropout, bidirectional=True, batch_first=True,
            )
            self.mlp_head = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.ReLU(), nn.Linear(2 * h, d))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))

    @property
    def direct(self) -> bool:
        return self.mlp_head is None

    def prompt_table(self) -> torch.Tensor:
        x = self.embedding.weight.unsqueeze(0)
        if self.direct:
            return x[0]
        if self.lstm_head is not None:
            x = self.lstm_head(x)[0]
        return self.mlp_head(x)[0]

    def prompts(self, batch_size: int) -> torch.Tensor:
        return self.prompt_table().unsqueeze(0).expand(batch_size, -1, -1)

    def use_table(self, table: torch.Tensor) -> None:
        """Hold P itself from now on (what peft does with a loaded ``prompt_embeddings``)."""
        self.lstm_head = None
        self.mlp_head = None
        with torch.no_grad():
            self.embedding.weight.copy_(table.to(self.embedding.weight.dtype))


def export_state(module: PromptEncoder) -> dict[str, torch.Tensor]:
    return {PROMPT_KEY: module.prompt_table()}


def import_state(module: PromptEncoder, state: dict[str, torch.Tensor]) -> None:
    module.use_table(_take_prompt_key(state, tuple(module.embedding.weight.shape)))


def inject(model: nn.Module, config: PromptEncoderConfig, adapter_name: str) -> PromptEncoder:
    fill_model_dims(model, config)
    if config.encoder_hidden_size is None:
        config.encoder_hidden_size = config.token_dim
    device = word_embeddings(model).weight.device
    return PromptEncoder(config).to(device)


METHOD = Method(
    peft_type="P_TUNING",
    name="P-tuning",
    family="additive",
    config_cls=PromptEncoderConfig,
    inject=inject,
    forward=prompt_forward,
    generate=prompt_generate,
    export_state=export_state,
    import_state=import_state,
    key_prefix="base_model.",
    summary="Virtual tokens produced by a small MLP or LSTM encoder, prepended to the input embeddings.",
    learning_rate=1e-2,
    learning_rate_range=(1e-3, 3e-2),
)

"""UniPELT-style hybrid (peft_type ``UNIPELT``, tuners only): LoRA + prefix + bottleneck adapter, gated.

UniPELT (Mao et al., 2022) runs three PEFT methods at once and lets learned gates decide how much each
contributes, so the model can lean on whichever suits the task:

    LoRA on the query/value projections:   y = W x + b + σ(w_L·x + c_L) · s · B A x
    adapter after each feed-forward output: h ↦ h + σ(w_A·h + c_A) · up(act(down(h)))
    prefix in every attention layer:        keys P_K,l and values σ(g_l) · P_V,l

The LoRA and adapter gates are per token (a linear map of the sublayer's input to one logit), as in the
paper. The prefix reaches the model as a transformers cache shared by all query positions, so its gate
is one learned logit per layer (initialised 0, i.e. σ = ½) scaling the prefix values; this is the one
departure from the paper, recorded in docs/methods-additive.md. LoRA's B and the adapter's up
projection start at zero, so those two branches start as identities; the prefix is random at init.

Built from the pieces of the single methods: :class:`tuners.methods.lora.LoraLinear`,
:class:`tuners.methods.bottleneck.SequentialBottleneck` and
:class:`tuners.methods.prefix_tuning.PrefixEncoder`. The gates are input-dependent, so nothing merges.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import ConfigError, default_field
from tuners.inject import Insertion, insert_adapter
from tuners.layers import base_weight
from tuners.method import Method
from tuners.methods.blocks import sublayer_outputs
from tuners.methods.bottleneck import ACTIVATIONS, BottleneckConfig, SequentialBottleneck
from tuners.methods.lora import LoraConfig, LoraLinear
from tuners.methods.prefix_tuning import (
    PrefixEncoder,
    PrefixTuningConfig,
    fill_prefix_dims,
    prefix_forward,
    prefix_generate,
)
from tuners.methods.prompt_tuning import word_embeddings
from tuners.targets import linear_dims

# Query/value projections per architecture family, tried in order.
QUERY_VALUE_NAMES = (["q_proj", "v_proj"], ["query", "value"], ["c_attn"], ["q", "v"])


@dataclass
class UniPeltConfig(PrefixTuningConfig):
    peft_type = "UNIPELT"

    num_virtual_tokens: int = default_field(10, "Prefix length: learned key/value positions in every layer.")
    r: int = default_field(8, "LoRA rank on the query/value projections.")
    lora_alpha: int = default_field(16, "LoRA scale numerator (update × alpha / r).")
    lora_dropout: float = default_field(0.0, "Dropout on LoRA's input during training.")
    target_modules: list[str] | str | None = default_field(
        None, "Layers that get gated LoRA (default: the attention query and value projections)."
    )
    reduction_factor: int = default_field(16, "Adapter bottleneck width = hidden size / reduction_factor.")
    non_linearity: str = default_field(
        "relu", "Activation inside the adapter: relu, gelu, silu or tanh.", choices=tuple(ACTIVATIONS)
    )

    def validate(self) -> None:
        super().validate()
        if self.task_type == "SEQ_2_SEQ_LM":
            raise ConfigError("task_type: UniPELT supports decoder-only and encoder models, not SEQ_2_SEQ_LM")
        self.lora_config().validate()
        if not isinstance(self.reduction_factor, int) or self.reduction_factor <= 0:
            raise ConfigError(f"reduction_factor: must be a positive integer, got {self.reduction_factor!r}")
        if self.non_linearity not in ACTIVATIONS:
            raise ConfigError(f"non_linearity: must be one of {sorted(ACTIVATIONS)}, got {self.non_linearity!r}")

    def lora_config(self) -> LoraConfig:
        return LoraConfig(
            task_type=self.task_type, target_modules=self.target_modules, r=self.r,
            lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
        )

    def adapter_config(self) -> BottleneckConfig:
        return BottleneckConfig(
            task_type=self.task_type, variant="pfeiffer", reduction_factor=self.reduction_factor,
            non_linearity=self.non_linearity,
        )


class GatedLoraLinear(LoraLinear):
    """LoRA whose update is scaled per token by σ(w·x + c)."""

    adapter_params = (*LoraLinear.adapter_params, "lora_gate")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_gate = nn.ModuleDict()

    def add(self, name: str, r: int, alpha: float, config: LoraConfig) -> None:
        super().add(name, r, alpha, config)
        a = self.lora_A[name].weight
        self.lora_gate[name] = nn.Linear(self.in_features, 1, device=a.device, dtype=a.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return result
        name = self.active_adapter
        x = x.to(self.lora_A[name].weight.dtype)
        update = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x))) * self.scaling[name]
        gate = torch.sigmoid(self.lora_gate[name](x))
        return result + (gate * update).to(result.dtype)

    def merge(self, name: str) -> None:
        raise NotImplementedError("UniPELT's LoRA gate depends on the input, so it cannot be merged")


class GatedBottleneck(SequentialBottleneck):
    """h + σ(w·h + c) · a(h) after a feed-forward output projection."""

    adapter_params = (*SequentialBottleneck.adapter_params, "adapter_gate")

    def __init__(self, base_layer: nn.Module, hidden: int, reference: torch.Tensor) -> None:
        super().__init__(base_layer, hidden, reference)
        self.adapter_gate = nn.ModuleDict()

    def add(self, name: str, config: BottleneckConfig) -> None:
        super().add(name, config)
        down = self.adapter_down[name].weight
        self.adapter_gate[name] = nn.Linear(self.hidden, 1, device=down.device, dtype=down.dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        h = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return h
        gate = torch.sigmoid(self.adapter_gate[self.active_adapter](h.to(self.adapter_gate[self.active_adapter].weight.dtype)))
        return h + (gate * self.adapter(h).to(gate.dtype)).to(h.dtype)


class GatedPrefixEncoder(PrefixEncoder):
    """A prefix whose values are scaled by σ(g_l), one learned gate logit per layer."""

    def __init__(self, config: PrefixTuningConfig) -> None:
        super().__init__(config)
        self.prefix_gate = nn.Parameter(torch.zeros(config.num_layers))

    def key_values(self, batch_size: int, dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gates = torch.sigmoid(self.prefix_gate)
        if dtype is not None:
            gates = gates.to(dtype)
        return [(k, v * gates[i]) for i, (k, v) in enumerate(super().key_values(batch_size, dtype))]


def export_state(module: GatedPrefixEncoder) -> dict[str, torch.Tensor]:
    return {f"prefix.{k}": v for k, v in module.state_dict().items()}


def import_state(module: GatedPrefixEncoder, state: dict[str, torch.Tensor]) -> None:
    from tuners.model import AdapterLoadError

    inner = {k.removeprefix("prefix."): v for k, v in state.items() if k.startswith("prefix.")}
    expected = set(module.state_dict())
    missing = sorted(f"prefix.{k}" for k in expected - set(inner))
    unexpected = sorted(k for k in state if not k.startswith("prefix.") or k.removeprefix("prefix.") not in expected)
    if missing or unexpected:
        raise AdapterLoadError(missing, unexpected)
    module.load_state_dict(inner)


def _default_lora_targets(model: nn.Module) -> list[str]:
    leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for names in QUERY_VALUE_NAMES:
        if all(n in leaves for n in names):
            return names
    raise ConfigError("target_modules: cannot find query/value projections in this model; set target_modules")


def inject(model: nn.Module, config: UniPeltConfig, adapter_name: str) -> GatedPrefixEncoder:
    if config.target_modules is None:
        config.target_modules = _default_lora_targets(model)
    lora_config, adapter_config = config.lora_config(), config.adapter_config()
    lora = Insertion(
        wrappers=(GatedLoraLinear,),
        wrap=lambda module, name: GatedLoraLinear(module),
        add=lambda layer, adapter_name, name: layer.add(adapter_name, config.r, float(config.lora_alpha), lora_config),
    )
    insert_adapter(model, config, adapter_name, lora)
    adapter = Insertion(
        wrappers=(GatedBottleneck,),
        wrap=lambda module, name: GatedBottleneck(module, linear_dims(module)[1], base_weight(module)),
        add=lambda layer, adapter_name, name: layer.add(adapter_name, adapter_config),
    )
    insert_adapter(model, config, adapter_name, adapter, names=sublayer_outputs(model, "ffn"))
    fill_prefix_dims(model, config)
    return GatedPrefixEncoder(config).to(word_embeddings(model).weight.device)


METHOD = Method(
    peft_type="UNIPELT",
    name="UniPELT (LoRA + prefix + adapter)",
    family="hybrid",
    config_cls=UniPeltConfig,
    inject=inject,
    forward=prefix_forward,
    generate=prefix_generate,
    export_state=export_state,
    import_state=import_state,
    peft_compatible=False,
    summary="Gated LoRA, prefix and bottleneck adapter together; learned gates weigh each per token or layer.",
    learning_rate=5e-4,
    learning_rate_range=(1e-4, 1e-3),
)

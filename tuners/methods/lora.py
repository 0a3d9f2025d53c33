"""LoRA, rsLoRA and DoRA (peft_type ``LORA``).

LoRA (Hu et al., 2021) learns a low-rank update of a frozen weight:

    y = W x + b + s · B A dropout(x),    s = alpha / r   (rsLoRA: alpha / sqrt(r))

with A (r × in) and B (out × r); B starts at zero so training starts from the base model.
DoRA (Liu et al., 2024) splits the updated weight into a magnitude m and a direction:

    y = (m / n) ⊙ ((W + s B A) x) + b,   n = ‖W + s B A‖ per output row, detached,

with m initialised to n. Targets: ``nn.Linear``, GPT-2 ``Conv1D`` (weight stored in × out),
quantized linears (QLoRA) and ``nn.Embedding`` (y = E[x] + s · (A^T[x]) B^T).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter, wraps_conv1d
from tuners.layers import AdapterLayer, add_to_base_weight, base_weight
from tuners.method import Method
from tuners.targets import linear_dims

BIAS_MODES = ("none", "all", "lora_only")


@dataclass
class LoraConfig(AdapterConfig):
    peft_type = "LORA"
    peft_defaults = {"r": 8, "lora_alpha": 8, "task_type": None}
    unsupported = {
        "layers_to_transform": None,
        "layer_replication": None,
        "lora_bias": False,
        "trainable_token_indices": None,
        "target_parameters": None,
        "use_qalora": False,
        "alora_invocation_tokens": None,
        "megatron_config": None,
    }

    r: int = default_field(8, "Rank of the update; higher learns more, costs more.")
    lora_alpha: int = default_field(16, "Scale numerator: the update is multiplied by alpha / r.")
    lora_dropout: float = default_field(0.0, "Dropout on the adapter's input during training.")
    use_rslora: bool = default_field(False, "rsLoRA: scale by alpha / sqrt(r), stable at high ranks.")
    use_dora: bool = default_field(False, "DoRA: learn a per-row magnitude as well as the direction.")
    init_lora_weights: bool | str = default_field(
        True, "True: A Kaiming-uniform, B zero. 'gaussian': A ~ N(0, 1/r), B zero. False: both random."
    )
    bias: str = default_field(
        "none", "Train biases too: 'none', 'all', or 'lora_only' (targeted layers).", choices=BIAS_MODES
    )
    fan_in_fan_out: bool = default_field(False, "Set for GPT-2 Conv1D targets (weight stored in × out).")
    rank_pattern: dict = default_field({}, "Per-module rank: {regex of module name: r}.")
    alpha_pattern: dict = default_field({}, "Per-module alpha: {regex of module name: alpha}.")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"r: must be a positive integer, got {self.r!r}")
        if not isinstance(self.lora_alpha, int | float) or self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha: must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias not in BIAS_MODES:
            raise ConfigError(f"bias: must be one of {BIAS_MODES}, got {self.bias!r}")
        if self.init_lora_weights not in (True, False, "gaussian"):
            raise ConfigError(f"init_lora_weights: must be true, false or 'gaussian', got {self.init_lora_weights!r}")
        for name, pattern in (("rank_pattern", self.rank_pattern), ("alpha_pattern", self.alpha_pattern)):
            for key, value in (pattern or {}).items():
                if not isinstance(value, int | float) or value <= 0:
                    raise ConfigError(f"{name}[{key!r}]: must be positive, got {value!r}")

    def rank_and_alpha(self, module_name: str) -> tuple[int, float]:
        r = _pattern_value(self.rank_pattern, module_name, self.r)
        alpha = _pattern_value(self.alpha_pattern, module_name, self.lora_alpha)
        return int(r), float(alpha)

    def scaling(self, r: int, alpha: float) -> float:
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def _pattern_value(pattern: dict, module_name: str, default):
    """peft's rule: the first key whose regex matches the end of the module name at a dot boundary."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


# --------------------------------------------------------------------------- layers
class LoraLinear(AdapterLayer):
    """LoRA (optionally DoRA) around a linear-like base: ``nn.Linear``, ``Conv1D`` or a quantized linear."""

    adapter_params = ("lora_A", "lora_B", "lora_magnitude_vector")
    adapter_extras = ("lora_dropout", "scaling", "_dora_merge_scale")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_dims(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self._dora_merge_scale: dict[str, torch.Tensor] = {}

    def add(self, name: str, r: int, alpha: float, config: LoraConfig) -> None:
        weight = base_weight(self.base_layer)
        dtype = _adapter_dtype(weight)
        self.lora_A[name] = nn.Linear(self.in_features, r, bias=False, device=weight.device, dtype=dtype)
        self.lora_B[name] = nn.Linear(r, self.out_features, bias=False, device=weight.device, dtype=dtype)
        self.lora_dropout[name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.scaling[name] = config.scaling(r, alpha)
        _init_lora(self.lora_A[name].weight, self.lora_B[name].weight, config.init_lora_weights, r)
        if config.use_dora:
            norm = self._weight_norm(name, weight.to(dtype)).detach()
            self.lora_magnitude_vector[name] = nn.Parameter(norm.clone())

    def delta_weight(self, name: str) -> torch.Tensor:
        """s · B A as (out, in)."""
        return self.lora_B[name].weight @ self.lora_A[name].weight * self.scaling[name]

    def _weight_norm(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return torch.linalg.norm(weight + self.delta_weight(name).detach(), dim=1)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return result
        name = self.active_adapter
        lora_A, lora_B = self.lora_A[name], self.lora_B[name]
        dropout, scale = self.lora_dropout[name], self.scaling[name]
        if not torch.is_autocast_enabled(x.device.type):  # under autocast the matmuls pick their own dtype
            x = x.to(lora_A.weight.dtype)
        if name not in self.lora_magnitude_vector:
            # Scaled at rank width (r columns), not at the output's: the same product, far fewer multiplies.
            return result + lora_B(lora_A(dropout(x)) * scale).to(result.dtype)
        return result + self._dora_term(name, dropout, x, result).to(result.dtype)

    def _dora_term(self, name: str, dropout: nn.Module, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """(m/n - 1) ⊙ W x + (m/n) ⊙ s B A x: added to the base output (bias included) gives DoRA."""
        weight = base_weight(self.base_layer).to(x.dtype)
        norm = self._weight_norm(name, weight).detach()
        mag_scale = (self.lora_magnitude_vector[name] / norm).view(1, -1)
        if isinstance(dropout, nn.Identity) or not self.training:
            bias = getattr(self.base_layer, "bias", None)
            base_out = result.to(x.dtype) - (bias.to(x.dtype) if bias is not None else 0)
        else:
            x = dropout(x)
            base_out = F.linear(x, weight)
        lora_out = self.lora_B[name](self.lora_A[name](x)) * self.scaling[name]
        return (mag_scale - 1) * base_out + mag_scale * lora_out

    def merge(self, name: str) -> None:
        if name in self.merged_adapters:
            return
        weight = base_weight(self.base_layer)
        delta = self.delta_weight(name).to(weight.dtype)
        if name in self.lora_magnitude_vector:
            merged = weight + delta
            scale = (self.lora_magnitude_vector[name] / torch.linalg.norm(merged, dim=1)).detach()
            self._dora_merge_scale[name] = scale
            delta = merged * scale.view(-1, 1) - weight
        add_to_base_weight(self.base_layer, delta.detach())
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight = base_weight(self.base_layer)
            if name in self.lora_magnitude_vector:
                scale = self._dora_merge_scale.pop(name)
                original = weight / scale.view(-1, 1) - self.delta_weight(name).to(weight.dtype)
                add_to_base_weight(self.base_layer, (original - weight).detach())
            else:
                add_to_base_weight(self.base_layer, -self.delta_weight(name).to(weight.dtype).detach())


class LoraEmbedding(AdapterLayer):
    """LoRA around ``nn.Embedding``: A (r × vocab) is looked up by token id, then projected by B (dim × r)."""

    adapter_params = ("lora_embedding_A", "lora_embedding_B")
    adapter_extras = ("scaling",)

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()
        self.scaling: dict[str, float] = {}

    def add(self, name: str, r: int, alpha: float, config: LoraConfig) -> None:
        if config.use_dora:
            raise ConfigError("use_dora: DoRA is not supported on embedding layers; target linear layers")
        weight = self.base_layer.weight
        vocab, dim = weight.shape
        a = torch.zeros(r, vocab, device=weight.device, dtype=weight.dtype)
        b = torch.zeros(dim, r, device=weight.device, dtype=weight.dtype)
        if config.init_lora_weights is False:
            nn.init.normal_(a)
        nn.init.normal_(b)  # peft's embedding init: A zero, B normal (the update still starts at zero)
        self.lora_embedding_A[name] = nn.Parameter(a)
        self.lora_embedding_B[name] = nn.Parameter(b)
        self.scaling[name] = config.scaling(r, alpha)

    def delta_weight(self, name: str) -> torch.Tensor:
        """(vocab, dim) update of the embedding table."""
        return (self.lora_embedding_B[name] @ self.lora_embedding_A[name]).T * self.scaling[name]

    def forward(self, input_ids: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(input_ids, *args, **kwargs)
        if not self.is_active():
            return result
        name = self.active_adapter
        emb = self.base_layer
        after_a = F.embedding(
            input_ids, self.lora_embedding_A[name].T, emb.padding_idx, emb.max_norm,
            emb.norm_type, emb.scale_grad_by_freq, emb.sparse,
        )
        return result + (after_a @ self.lora_embedding_B[name].T) * self.scaling[name]

    def merge(self, name: str) -> None:
        if name in self.merged_adapters:
            return
        with torch.no_grad():
            self.base_layer.weight.add_(self.delta_weight(name))
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            with torch.no_grad():
                self.base_layer.weight.sub_(self.delta_weight(name))


def _adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    return weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32


def _init_lora(a: torch.Tensor, b: torch.Tensor, init: bool | str, r: int) -> None:
    with torch.no_grad():
        if init == "gaussian":
            nn.init.normal_(a, std=1 / r)
            nn.init.zeros_(b)
        elif init is True:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(b)
        else:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.kaiming_uniform_(b, a=math.sqrt(5))


# --------------------------------------------------------------------------- injection
def _check_rank(name: str, r: int, module: LoraLinear | LoraEmbedding) -> None:
    """A rank above a layer's smaller side adds parameters but no capacity: almost always a typo."""
    base = module.base_layer
    dims = (base.num_embeddings, base.embedding_dim) if isinstance(base, nn.Embedding) else linear_dims(base)
    if r > min(dims):
        raise ConfigError(f"r: {r} is larger than layer {name}'s smaller dimension ({min(dims)}); "
                          f"use a rank of at most {min(dims)}")


def _insertion(config: LoraConfig) -> Insertion:
    """``LoraEmbedding`` on embeddings, ``LoraLinear`` on linear-like modules; each layer's rank and alpha
    come from the config's per-module patterns."""

    def add(layer: LoraLinear | LoraEmbedding, adapter_name: str, name: str) -> None:
        r, alpha = config.rank_and_alpha(name)
        _check_rank(name, r, layer)
        layer.add(adapter_name, r, alpha, config)

    return Insertion(
        wrappers=(LoraLinear, LoraEmbedding),
        wrap=lambda module, name: LoraEmbedding(module) if isinstance(module, nn.Embedding) else LoraLinear(module),
        add=add,
        accepts=lambda module: isinstance(module, nn.Embedding) or linear_dims(module) is not None,
    )


def inject(model: nn.Module, config: LoraConfig, adapter_name: str) -> None:
    layers = insert_adapter(model, config, adapter_name, _insertion(config))
    config.fan_in_fan_out = config.fan_in_fan_out or wraps_conv1d(layers)


def base_trainables(model: nn.Module, config: LoraConfig) -> dict[str, nn.Parameter]:
    """Biases trained alongside LoRA, as peft picks them: every parameter named ``bias`` (``all``; the core
    renames those inside modules-to-save to peft's keys) or the biases of the adapted layers (``lora_only``)."""
    if config.bias == "none":
        return {}
    if config.bias == "all":
        return {n: p for n, p in model.named_parameters() if n == "bias" or n.endswith(".bias")}
    out = {}
    for name, module in model.named_modules():
        bias = getattr(module, "bias", None)
        if isinstance(module, LoraLinear) and isinstance(bias, nn.Parameter):
            out[f"{name}.base_layer.bias"] = bias
    return out


METHOD = Method(
    peft_type="LORA",
    name="LoRA",
    family="reparameterized",
    config_cls=LoraConfig,
    inject=inject,
    base_trainables=base_trainables,
    summary="Low-rank update of frozen weights; mergeable. rsLoRA and DoRA are options of it.",
    learning_rate=2e-4,
    learning_rate_range=(1e-4, 5e-4),
    default_targets="attention",
)

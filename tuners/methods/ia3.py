"""(IA)³ (peft_type ``IA3``): learned rescaling vectors (Liu et al., 2022).

Attention-type targets scale their output, bias included; feed-forward targets scale their input:

    attention:     y = (W x + b) ⊙ l        l: (out, 1), key ``<m>.ia3_l``
    feed-forward:  y = W (x ⊙ l) + b        l: (1, in)

``l`` starts at ones, so the adapter is the base model at init. Merging multiplies the weight's rows
(and the bias) or columns by ``l``. Without ``target_modules`` the defaults are peft's choice made
structurally: the key and value projections plus the feed-forward output projection (feed-forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter, wraps_conv1d
from tuners.layers import AdapterLayer, base_weight, set_base_weight
from tuners.method import Method
from tuners.methods.blocks import key_value_projections, sublayer_outputs
from tuners.targets import linear_dims, matches


@dataclass
class IA3Config(AdapterConfig):
    peft_type = "IA3"

    target_modules: list[str] | str | None = default_field(
        None, "Layers to rescale. Empty: key/value projections and the feed-forward output projection."
    )
    feedforward_modules: list[str] | str | None = default_field(
        None, "Targets whose input (not output) is scaled; must be a subset of target_modules."
    )
    fan_in_fan_out: bool = default_field(False, "Set for GPT-2 Conv1D targets (weight stored in × out).")
    init_ia3_weights: bool = default_field(True, "Start the scaling vectors at one (the base model).")

    def validate(self) -> None:
        super().validate()
        ff = self.feedforward_modules
        if ff is not None and not isinstance(ff, str) and not all(isinstance(v, str) for v in ff):
            raise ConfigError(f"feedforward_modules: expected a list of module names or a regex, got {ff!r}")
        if self.target_modules is None and ff is not None:
            raise ConfigError("feedforward_modules: given without target_modules; name the targets too")
        if isinstance(ff, list | tuple | set) and isinstance(self.target_modules, list | tuple | set):
            extra = sorted(set(ff) - set(self.target_modules))
            if extra:
                raise ConfigError(f"feedforward_modules: {extra} are not in target_modules")
        if self.target_modules is not None and ff is None:
            raise ConfigError("feedforward_modules: required when target_modules is given (may be [])")
        if not isinstance(self.init_ia3_weights, bool):
            raise ConfigError(f"init_ia3_weights: must be true or false, got {self.init_ia3_weights!r}")


class IA3Linear(AdapterLayer):
    """(IA)³ around a linear-like base (``nn.Linear``, ``Conv1D``, a quantized linear)."""

    adapter_params = ("ia3_l",)
    adapter_extras = ("_merged_bias",)

    def __init__(self, base_layer: nn.Module, is_feedforward: bool) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_dims(base_layer)
        self.is_feedforward = is_feedforward
        self.ia3_l = nn.ParameterDict()
        self._merged_bias: dict[str, torch.Tensor] = {}

    def add(self, name: str, init_ones: bool) -> None:
        weight = base_weight(self.base_layer)
        dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        shape = (1, self.in_features) if self.is_feedforward else (self.out_features, 1)
        value = torch.ones(shape, dtype=dtype, device=weight.device)
        if not init_ones:
            nn.init.normal_(value)
        self.ia3_l[name] = nn.Parameter(value)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self.is_active():
            return self.base_layer(x, *args, **kwargs)
        scale = self.ia3_l[self.active_adapter].flatten()
        if self.is_feedforward:
            return self.base_layer((x.to(scale.dtype) * scale).to(x.dtype), *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        return (result * scale).to(result.dtype)

    def _scaled_weight(self, scale: torch.Tensor) -> torch.Tensor:
        weight = base_weight(self.base_layer)
        return weight * (scale.view(1, -1) if self.is_feedforward else scale.view(-1, 1)).to(weight.dtype)

    def merge(self, name: str) -> None:
        if name in self.merged_adapters:
            return
        scale = self.ia3_l[name].detach().flatten()
        set_base_weight(self.base_layer, self._scaled_weight(scale))
        bias = getattr(self.base_layer, "bias", None)
        if bias is not None and not self.is_feedforward:
            self._merged_bias[name] = bias.detach().clone()
            with torch.no_grad():
                bias.mul_(scale.to(bias.dtype))
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            scale = self.ia3_l[name].detach().flatten()
            set_base_weight(self.base_layer, self._scaled_weight(1.0 / scale))
            if name in self._merged_bias:
                with torch.no_grad():
                    self.base_layer.bias.copy_(self._merged_bias.pop(name))


def default_targets(model: nn.Module) -> tuple[list[str], list[str]]:
    """(targets, feed-forward targets): key/value projections and the feed-forward output projections."""
    ffn = sublayer_outputs(model, "ffn")
    return key_value_projections(model) + ffn, ffn


def inject(model: nn.Module, config: IA3Config, adapter_name: str) -> None:
    if config.target_modules is None:
        targets, ffn = default_targets(model)
        config.target_modules, config.feedforward_modules = sorted(targets), sorted(ffn)

    def is_feedforward(name: str) -> bool:
        return bool(config.feedforward_modules) and matches(name, config.feedforward_modules)

    def add(layer: IA3Linear, adapter_name: str, name: str) -> None:
        if layer.is_feedforward != is_feedforward(name):
            raise ConfigError(f"feedforward_modules: {name!r} is already adapted with the other IA3 kind")
        layer.add(adapter_name, config.init_ia3_weights)

    insertion = Insertion(wrappers=(IA3Linear,), wrap=lambda module, name: IA3Linear(module, is_feedforward(name)),
                          add=add)
    layers = insert_adapter(model, config, adapter_name, insertion)
    config.fan_in_fan_out = config.fan_in_fan_out or wraps_conv1d(layers)


METHOD = Method(
    peft_type="IA3",
    name="(IA)³",
    family="additive",
    config_cls=IA3Config,
    inject=inject,
    summary="Learned vectors rescale attention outputs and feed-forward inputs; very few parameters; mergeable.",
    learning_rate=1e-2,
    learning_rate_range=(1e-3, 3e-2),
)

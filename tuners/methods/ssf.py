"""SSF (peft_type ``SSF``, tuners only): scale and shift features (Lian et al., 2022).

A learned per-channel affine map after a layer's output:

    y = γ ⊙ f(x) + β        γ: (out,) key ``<m>.ssf_scale``, β: (out,) key ``<m>.ssf_shift``

with γ = 1, β = 0 at init (the base model). By default it follows the attention output projection and
the feed-forward output projection of every block (found from the model's structure). Where the
adapted layer is linear the map folds into it: W' = diag(γ) W, b' = γ ⊙ b + β (a bias is created
when the base has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter
from tuners.layers import AdapterLayer, base_weight, set_base_weight
from tuners.method import Method
from tuners.methods.blocks import sublayer_outputs
from tuners.targets import linear_dims

PLACEMENTS = ("both", "attention", "ffn")


@dataclass
class SSFConfig(AdapterConfig):
    peft_type = "SSF"

    target_modules: list[str] | str | None = default_field(
        None, "Layers to follow with scale-and-shift. Empty: chosen by 'placement'."
    )
    placement: str = default_field(
        "both", "Without target_modules: after the attention output ('attention'), the FFN output ('ffn') or both.",
        choices=PLACEMENTS,
    )

    def validate(self) -> None:
        super().validate()
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement: must be one of {PLACEMENTS}, got {self.placement!r}")


class SSFLayer(AdapterLayer):
    """Scale and shift of a linear-like layer's output features."""

    adapter_params = ("ssf_scale", "ssf_shift")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_dims(base_layer)
        self.ssf_scale = nn.ParameterDict()
        self.ssf_shift = nn.ParameterDict()
        self._created_bias = False
        self._merged_bias: torch.Tensor | None = None

    def add(self, name: str) -> None:
        weight = base_weight(self.base_layer)
        dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        self.ssf_scale[name] = nn.Parameter(torch.ones(self.out_features, dtype=dtype, device=weight.device))
        self.ssf_shift[name] = nn.Parameter(torch.zeros(self.out_features, dtype=dtype, device=weight.device))

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return result
        name = self.active_adapter
        return (result * self.ssf_scale[name] + self.ssf_shift[name]).to(result.dtype)

    def merge(self, name: str) -> None:
        if name in self.merged_adapters:
            return
        if self.merged_adapters:
            raise RuntimeError("only one SSF adapter can be merged at a time")
        base = self.base_layer
        scale, shift = self.ssf_scale[name].detach(), self.ssf_shift[name].detach()
        weight = base_weight(base)
        set_base_weight(base, weight * scale.view(-1, 1).to(weight.dtype))
        with torch.no_grad():
            if getattr(base, "bias", None) is None:
                base.bias = nn.Parameter(torch.zeros(self.out_features, dtype=weight.dtype, device=weight.device))
                base.bias.requires_grad_(False)
                self._created_bias = True
            self._merged_bias = base.bias.detach().clone()
            base.bias.copy_((base.bias * scale + shift).to(base.bias.dtype))
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            base = self.base_layer
            weight = base_weight(base)
            scale = self.ssf_scale[name].detach()
            set_base_weight(base, weight / scale.view(-1, 1).to(weight.dtype))
            with torch.no_grad():
                if self._created_bias:
                    base.bias = None
                    self._created_bias = False
                else:
                    base.bias.copy_(self._merged_bias)
            self._merged_bias = None


_INSERTION = Insertion(
    wrappers=(SSFLayer,),
    wrap=lambda module, name: SSFLayer(module),
    add=lambda layer, adapter_name, name: layer.add(adapter_name),
)


def inject(model: nn.Module, config: SSFConfig, adapter_name: str) -> None:
    if config.target_modules is None:
        config.target_modules = sublayer_outputs(model, config.placement)
    insert_adapter(model, config, adapter_name, _INSERTION)


METHOD = Method(
    peft_type="SSF",
    name="SSF",
    family="additive",
    config_cls=SSFConfig,
    inject=inject,
    peft_compatible=False,
    summary="Per-channel scale and shift after attention and feed-forward outputs; mergeable into the layer.",
    learning_rate=5e-3,
    learning_rate_range=(1e-3, 1e-2),
)

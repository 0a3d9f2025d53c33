"""LoHa: low-rank Hadamard product update (peft_type ``LOHA``; Hyeon-Woo et al., FedPara, 2022).

    ΔW = s · (W1a W1b) ⊙ (W2a W2b),    s = alpha / r,
    W1a, W2a: (out × r),  W1b, W2b: (r × in)

The element-wise product of two rank-r matrices can reach rank r², so LoHa covers more of the weight
space than LoRA for the same parameter count (2·r·(out + in)). Initialisation follows peft: W1a, W1b,
W2a Kaiming-uniform and W2b zero, so ΔW starts at zero and training starts from the base model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import default_field
from tuners.method import Method
from tuners.methods.delta_weight import (
    DeltaWeightLayer,
    LycorisConfig,
    conv1d_caveat,
    inject_delta_layers,
    rank_and_alpha,
)


@dataclass
class LohaConfig(LycorisConfig):
    peft_type = "LOHA"

    r: int = default_field(8, "Rank of each of the two factor products; the update can reach rank r².")
    init_weights: bool = default_field(
        True, "True: the update starts at zero (W2b = 0). False: all factors random (for tests only)."
    )


class LohaLayer(DeltaWeightLayer):
    """LoHa around a linear-like base (``nn.Linear``, GPT-2 ``Conv1D``, quantized linear)."""

    adapter_params = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.hada_w1_a = nn.ParameterDict()
        self.hada_w1_b = nn.ParameterDict()
        self.hada_w2_a = nn.ParameterDict()
        self.hada_w2_b = nn.ParameterDict()

    def add(self, name: str, module_name: str, config: LohaConfig) -> None:
        r, alpha = rank_and_alpha(config, module_name)
        out, inp, kw = self.out_features, self.in_features, self.factory()
        self.hada_w1_a[name] = nn.Parameter(torch.empty(out, r, **kw))
        self.hada_w1_b[name] = nn.Parameter(torch.empty(r, inp, **kw))
        self.hada_w2_a[name] = nn.Parameter(torch.empty(out, r, **kw))
        self.hada_w2_b[name] = nn.Parameter(torch.empty(r, inp, **kw))
        self.scaling[name] = alpha / r
        # peft's LoHa always rescales rank dropout by the kept fraction.
        self.set_dropouts(name, config.module_dropout, config.rank_dropout, rescale=True)
        _init_factors(self, name, zero_update=bool(config.init_weights))

    def delta_weight(self, name: str) -> torch.Tensor:
        w1 = self.hada_w1_a[name] @ self.hada_w1_b[name]
        w2 = self.hada_w2_a[name] @ self.hada_w2_b[name]
        return w1 * w2 * self.scaling[name]


def _init_factors(layer: LohaLayer, name: str, zero_update: bool) -> None:
    with torch.no_grad():
        for attr in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"):
            nn.init.kaiming_uniform_(getattr(layer, attr)[name], a=math.sqrt(5))
        if zero_update:
            nn.init.zeros_(layer.hada_w2_b[name])


def inject(model: nn.Module, config: LohaConfig, adapter_name: str) -> None:
    inject_delta_layers(model, config, adapter_name, LohaLayer)


METHOD = Method(
    peft_type="LOHA",
    name="LoHa",
    family="reparameterized",
    config_cls=LohaConfig,
    inject=inject,
    summary="Hadamard product of two low-rank updates: rank up to r² for LoRA's parameter count; mergeable.",
    peft_caveat=conv1d_caveat,
    learning_rate=5e-4,
    learning_rate_range=(1e-4, 1e-3),
    default_targets="attention",
)

"""LoKr: Kronecker-product update (peft_type ``LOKR``; Yeh et al., LyCORIS, 2023).

    ΔW = s · (W1 ⊗ W2),    s = alpha / r

The weight's dimensions are factored, out = a·b and in = c·d (:func:`factorization`: the divisor pair
closest to the square root, or to ``decompose_factor``), with W1 (a × c) and W2 (b × d), a ≤ b, c ≤ d.
W2 is stored as a rank-r product W2a W2b when r < max(b, d)/2; W1 likewise when ``decompose_both``
and r < max(a, c)/2; otherwise they are full matrices (r then only sets the scale). Initialisation
follows peft: W1 (or W1a) zero so ΔW starts at zero; ``init_weights='lycoris'`` zeroes W2 (or W2b).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import ConfigError, default_field
from tuners.method import Method
from tuners.methods.delta_weight import (
    DeltaWeightLayer,
    LycorisConfig,
    conv1d_caveat,
    inject_delta_layers,
    rank_and_alpha,
)


@dataclass
class LokrConfig(LycorisConfig):
    peft_type = "LOKR"

    r: int = default_field(8, "Rank of the factored Kronecker factor(s); also sets the scale alpha / r.")
    rank_dropout_scale: bool = default_field(False, "Rescale the kept rows by the kept fraction under rank dropout.")
    decompose_both: bool = default_field(False, "Also factor the left Kronecker factor W1 into a rank-r product.")
    decompose_factor: int = default_field(
        -1, "Split each dimension as close as possible to this factor (-1: near the square root)."
    )
    init_weights: bool | str = default_field(
        True, "True: W1 starts at zero. 'lycoris': W2 starts at zero. False: all random (tests only)."
    )

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.decompose_factor, int) or isinstance(self.decompose_factor, bool) or (
            self.decompose_factor != -1 and self.decompose_factor <= 0
        ):
            raise ConfigError(f"decompose_factor: must be -1 or a positive integer, got {self.decompose_factor!r}")
        if self.init_weights not in (True, False, "lycoris"):
            raise ConfigError(f"init_weights: must be true, false or 'lycoris', got {self.init_weights!r}")


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split ``dimension`` into m·n: (factor, dimension/factor) when ``factor`` divides it, else the
    divisor pair nearest the square root whose smaller part does not exceed ``factor``, smaller first.
    The same rule as peft/LyCORIS: the factor shapes are part of the on-disk format."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


class LokrLayer(DeltaWeightLayer):
    """LoKr around a linear-like base (``nn.Linear``, GPT-2 ``Conv1D``, quantized linear)."""

    adapter_params = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        for attr in self.adapter_params:
            setattr(self, attr, nn.ParameterDict())

    def add(self, name: str, module_name: str, config: LokrConfig) -> None:
        r, alpha = rank_and_alpha(config, module_name)
        in_m, in_n = factorization(self.in_features, config.decompose_factor)
        out_l, out_k = factorization(self.out_features, config.decompose_factor)
        kw = self.factory()
        if config.decompose_both and r < max(out_l, in_m) / 2:
            self.lokr_w1_a[name] = nn.Parameter(torch.empty(out_l, r, **kw))
            self.lokr_w1_b[name] = nn.Parameter(torch.empty(r, in_m, **kw))
        else:
            self.lokr_w1[name] = nn.Parameter(torch.empty(out_l, in_m, **kw))
        if r < max(out_k, in_n) / 2:
            self.lokr_w2_a[name] = nn.Parameter(torch.empty(out_k, r, **kw))
            self.lokr_w2_b[name] = nn.Parameter(torch.empty(r, in_n, **kw))
        else:
            self.lokr_w2[name] = nn.Parameter(torch.empty(out_k, in_n, **kw))
        self.scaling[name] = alpha / r
        self.set_dropouts(name, config.module_dropout, config.rank_dropout, rescale=config.rank_dropout_scale)
        self._init(name, config.init_weights)

    def _init(self, name: str, init: bool | str) -> None:
        with torch.no_grad():
            for param in self.adapter_state(name).values():
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
            if init is True:
                zeroed = self.lokr_w1[name] if name in self.lokr_w1 else self.lokr_w1_a[name]
            elif init == "lycoris":
                zeroed = self.lokr_w2[name] if name in self.lokr_w2 else self.lokr_w2_b[name]
            else:
                return
            nn.init.zeros_(zeroed)

    def _factor(self, name: str, which: str) -> torch.Tensor:
        full = getattr(self, f"lokr_{which}")
        if name in full:
            return full[name]
        return getattr(self, f"lokr_{which}_a")[name] @ getattr(self, f"lokr_{which}_b")[name]

    def delta_weight(self, name: str) -> torch.Tensor:
        return torch.kron(self._factor(name, "w1"), self._factor(name, "w2")) * self.scaling[name]


def inject(model: nn.Module, config: LokrConfig, adapter_name: str) -> None:
    inject_delta_layers(model, config, adapter_name, LokrLayer)


METHOD = Method(
    peft_type="LOKR",
    name="LoKr",
    family="reparameterized",
    config_cls=LokrConfig,
    inject=inject,
    summary="Kronecker product of two small factors: a full-rank-capable update from few parameters; mergeable.",
    peft_caveat=conv1d_caveat,
    learning_rate=5e-4,
    learning_rate_range=(1e-4, 1e-3),
    # Every linear layer, as LyCORIS applies it: a Kronecker update is a few hundred numbers per layer (640
    # for MiniLM's 384 x 384 query), and on query/value alone it stayed at the majority class on the
    # drug-review demo where all-linear learned (docs/runs.md, "Presets").
    default_targets="all-linear",
)

"""Bottleneck adapters (peft_type ``BOTTLENECK``, tuners only): Houlsby, Pfeiffer and parallel.

A bottleneck adapter is a small residual MLP on a hidden state h of width d:

    a(h) = up(act(down(dropout(h)))) · s        down: d → m, up: m → d, m = d / reduction_factor

``up`` starts at zero, so every variant is the base model at init.

- ``houlsby`` (Houlsby et al., 2019): h ↦ h + a(h) after the attention output projection and after the
  feed-forward output projection of every block (before the residual add).
- ``pfeiffer`` (Pfeiffer et al., 2021): the same after the feed-forward output only.
- ``parallel`` (He et al., 2022): the feed-forward sublayer F gets a parallel branch from its input x:
  F(x) + a(x). Where the model adds the residual inside the FFN's output module (BERT's
  ``BertOutput(hidden, input)``), a(input) is added to that residual input, which is the same sum.

Keys: ``<m>.adapter_down.weight/bias`` (m, d) and ``<m>.adapter_up.weight/bias`` (d, m). The adapter is
non-linear, so it cannot be merged into the base weights.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter
from tuners.layers import AdapterLayer, base_weight
from tuners.method import Method
from tuners.methods.blocks import blocks, sublayer_outputs
from tuners.targets import linear_dims

VARIANTS = ("houlsby", "pfeiffer", "parallel")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class BottleneckConfig(AdapterConfig):
    peft_type = "BOTTLENECK"

    variant: str = default_field(
        "houlsby", "houlsby: after attention and FFN; pfeiffer: after FFN only; parallel: beside the FFN.",
        choices=VARIANTS,
    )
    reduction_factor: int = default_field(16, "Bottleneck width = hidden size / reduction_factor.")
    bottleneck_size: int | None = default_field(None, "Bottleneck width; overrides reduction_factor.")
    non_linearity: str = default_field(
        "relu", "Activation inside the adapter: relu, gelu, silu or tanh.", choices=tuple(ACTIVATIONS)
    )
    scaling: float = default_field(1.0, "Multiplier on the adapter's output.")
    adapter_dropout: float = default_field(0.0, "Dropout on the adapter's input during training.")
    target_modules: list[str] | str | None = default_field(
        None, "Layers to follow with an adapter (houlsby/pfeiffer only). Empty: chosen by the variant."
    )

    def validate(self) -> None:
        super().validate()
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant: must be one of {VARIANTS}, got {self.variant!r}")
        if not isinstance(self.reduction_factor, int) or self.reduction_factor <= 0:
            raise ConfigError(f"reduction_factor: must be a positive integer, got {self.reduction_factor!r}")
        if self.bottleneck_size is not None and (not isinstance(self.bottleneck_size, int) or self.bottleneck_size <= 0):
            raise ConfigError(f"bottleneck_size: must be a positive integer, got {self.bottleneck_size!r}")
        if self.non_linearity not in ACTIVATIONS:
            raise ConfigError(f"non_linearity: must be one of {sorted(ACTIVATIONS)}, got {self.non_linearity!r}")
        if not isinstance(self.scaling, int | float) or isinstance(self.scaling, bool):
            raise ConfigError(f"scaling: must be a number, got {self.scaling!r}")
        if not 0.0 <= float(self.adapter_dropout) < 1.0:
            raise ConfigError(f"adapter_dropout: must be in [0, 1), got {self.adapter_dropout!r}")
        if self.variant == "parallel" and self.target_modules is not None:
            raise ConfigError("target_modules: the parallel variant places itself beside each FFN; leave it empty")

    def width(self, hidden: int) -> int:
        return self.bottleneck_size or max(1, hidden // self.reduction_factor)


class _BottleneckLayer(AdapterLayer):
    adapter_params = ("adapter_down", "adapter_up")
    adapter_extras = ("adapter_act", "adapter_dropout", "scaling")

    def __init__(self, base_layer: nn.Module, hidden: int, reference: torch.Tensor) -> None:
        super().__init__(base_layer)
        self.hidden = hidden
        self.adapter_down = nn.ModuleDict()
        self.adapter_up = nn.ModuleDict()
        self.adapter_act = nn.ModuleDict()
        self.adapter_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self._reference = (reference.device, reference.dtype if reference.is_floating_point() else torch.float32)

    def add(self, name: str, config: BottleneckConfig) -> None:
        device, dtype = self._reference
        dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        width = config.width(self.hidden)
        self.adapter_down[name] = nn.Linear(self.hidden, width, device=device, dtype=dtype)
        self.adapter_up[name] = nn.Linear(width, self.hidden, device=device, dtype=dtype)
        nn.init.zeros_(self.adapter_up[name].weight)
        nn.init.zeros_(self.adapter_up[name].bias)
        self.adapter_act[name] = ACTIVATIONS[config.non_linearity]()
        drop = config.adapter_dropout
        self.adapter_dropout[name] = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.scaling[name] = float(config.scaling)

    def adapter(self, h: torch.Tensor) -> torch.Tensor:
        """a(h) = up(act(down(dropout(h)))) · s for the active adapter, in h's dtype."""
        name = self.active_adapter
        down = self.adapter_down[name]
        x = self.adapter_dropout[name](h.to(down.weight.dtype))
        out = self.adapter_up[name](self.adapter_act[name](down(x))) * self.scaling[name]
        return out.to(h.dtype)


class SequentialBottleneck(_BottleneckLayer):
    """h + a(h) after a linear-like layer (Houlsby / Pfeiffer placement)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        h = self.base_layer(x, *args, **kwargs)
        return h + self.adapter(h) if self.is_active() else h


class ParallelBottleneck(_BottleneckLayer):
    """F(x) + a(x) beside a feed-forward module F; ``residual_input`` for BERT-style output modules."""

    def __init__(self, base_layer: nn.Module, hidden: int, reference: torch.Tensor, residual_input: bool) -> None:
        super().__init__(base_layer, hidden, reference)
        self.residual_input = residual_input

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not self.is_active():
            return self.base_layer(hidden_states, *args, **kwargs)
        if self.residual_input:
            residual, *rest = args
            return self.base_layer(hidden_states, residual + self.adapter(residual), *rest, **kwargs)
        return self.base_layer(hidden_states, *args, **kwargs) + self.adapter(hidden_states)


def _linears(module: nn.Module) -> list[nn.Module]:
    out = []
    for m in module.modules():
        base = m.base_layer if isinstance(m, AdapterLayer) else m
        if linear_dims(base) is not None and base not in out:
            out.append(base)
    return out


def _parallel_sites(model: nn.Module) -> list[tuple[str, bool]]:
    """(module name, residual_input) of each block's feed-forward module."""
    sites = []
    for stack in blocks(model):
        for block in stack:
            if block.ffn_output is None:
                continue
            parent = block.ffn_output.rsplit(".", 1)[0]
            module = model.get_submodule(parent)
            if isinstance(module, ParallelBottleneck):
                sites.append((parent, module.residual_input))
            elif len(_linears(module)) >= 2:
                sites.append((parent, False))
            elif len(inspect.signature(module.forward).parameters) >= 2:
                sites.append((parent, True))
            else:
                raise ConfigError(
                    f"variant: cannot place a parallel adapter beside {parent!r} ({type(module).__name__}); "
                    "use houlsby or pfeiffer"
                )
    return sites


def _after(module: nn.Module, name: str) -> SequentialBottleneck:
    """An adapter after a linear-like layer, as wide as the layer's output."""
    return SequentialBottleneck(module, linear_dims(module)[1], base_weight(module))


def inject(model: nn.Module, config: BottleneckConfig, adapter_name: str) -> None:
    def add(layer: _BottleneckLayer, adapter_name: str, name: str) -> None:
        layer.add(adapter_name, config)

    if config.variant == "parallel":
        residual_input = dict(_parallel_sites(model))

        def beside(module: nn.Module, name: str) -> ParallelBottleneck:
            last = _linears(module)[-1]
            return ParallelBottleneck(module, linear_dims(last)[1], base_weight(last), residual_input[name])

        parallel = Insertion(wrappers=(ParallelBottleneck,), wrap=beside, add=add)
        insert_adapter(model, config, adapter_name, parallel, names=list(residual_input))
        return
    if config.target_modules is None:
        config.target_modules = sublayer_outputs(model, "both" if config.variant == "houlsby" else "ffn")
    insert_adapter(model, config, adapter_name, Insertion(wrappers=(SequentialBottleneck,), wrap=_after, add=add))


METHOD = Method(
    peft_type="BOTTLENECK",
    name="Bottleneck adapter",
    family="additive",
    config_cls=BottleneckConfig,
    inject=inject,
    peft_compatible=False,
    summary="Small residual MLPs after attention/FFN (Houlsby, Pfeiffer) or beside the FFN (parallel).",
    learning_rate=3e-4,
    learning_rate_range=(1e-4, 1e-3),
)

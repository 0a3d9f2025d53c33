"""Layers whose adapter is a dense weight update ΔW rebuilt from small factors (LoHa, LoKr, AdaLoRA).

    y = base(x) + x ΔWᵀ,        merge: W ← W + ΔW

ΔW is always (out × in); GPT-2's ``Conv1D`` (weight stored in × out) is handled where the update is
written into the base weight (:func:`tuners.layers.add_to_base_weight`), so the factors and their
on-disk shapes are the same for every linear-like base. Rebuilding ΔW each forward costs one
(out × in) matrix, which is what peft does for the LyCORIS methods and what keeps ours equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter
from tuners.layers import AdapterLayer, add_to_base_weight, base_weight
from tuners.methods.lora import _adapter_dtype, _pattern_value
from tuners.targets import is_fan_in_fan_out, linear_dims


class DeltaWeightLayer(AdapterLayer):
    """A linear-like base plus, per adapter, ``delta_weight(name)``; subclasses add the factors.

    Training-time regularisers as peft's LyCORIS layers define them: ``module_dropout`` skips the whole
    update with that probability; ``rank_dropout`` zeroes output rows of ΔW (rescaled by the kept
    fraction when ``rank_dropout_scale``).
    """

    adapter_extras = ("scaling", "module_dropout", "rank_dropout", "rank_dropout_scale")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_dims(base_layer)
        self.scaling: dict[str, float] = {}
        self.module_dropout: dict[str, float] = {}
        self.rank_dropout: dict[str, float] = {}
        self.rank_dropout_scale: dict[str, bool] = {}

    def factory(self) -> dict:
        """Device and dtype for new adapter tensors: the base's device, full precision."""
        weight = base_weight(self.base_layer)
        return {"device": weight.device, "dtype": _adapter_dtype(weight)}

    def set_dropouts(self, name: str, module_dropout: float, rank_dropout: float, rescale: bool) -> None:
        self.module_dropout[name] = float(module_dropout)
        self.rank_dropout[name] = float(rank_dropout)
        self.rank_dropout_scale[name] = rescale

    def delta_weight(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return result
        name = self.active_adapter
        if self.training and self.module_dropout.get(name, 0.0) > 0 and torch.rand(1).item() <= self.module_dropout[name]:
            return result
        delta = self.delta_weight(name)
        if self.training and self.rank_dropout.get(name, 0.0) > 0:
            delta = self._drop_rows(name, delta)
        return result + F.linear(x.to(delta.dtype), delta).to(result.dtype)

    def _drop_rows(self, name: str, delta: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand(delta.shape[0], device=delta.device) > self.rank_dropout[name]).to(delta.dtype)
        if self.rank_dropout_scale[name]:
            keep = keep / keep.mean().clamp_min(1e-12)
        return delta * keep.view(-1, 1)

    def merge(self, name: str) -> None:
        if name in self.merged_adapters:
            return
        add_to_base_weight(self.base_layer, self.delta_weight(name).detach())
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            add_to_base_weight(self.base_layer, -self.delta_weight(name).detach())


def inject_delta_layers(
    model: nn.Module,
    config: AdapterConfig,
    adapter_name: str,
    layer_cls: type[DeltaWeightLayer],
) -> dict[str, DeltaWeightLayer]:
    """Add the adapter to every target of ``config``, in ``layer_cls`` wrappers; returns them by name.

    ``layer_cls.add(name, module_name, config)`` builds the factors; the module name lets it apply
    per-module patterns.
    """
    insertion = Insertion(
        wrappers=(layer_cls,),
        wrap=lambda module, name: layer_cls(module),
        add=lambda layer, adapter_name, name: layer.add(adapter_name, name, config),
    )
    return insert_adapter(model, config, adapter_name, insertion)


@dataclass
class LycorisConfig(AdapterConfig):
    """Fields LoHa and LoKr share (peft's LycorisConfig)."""

    r: int = default_field(8, "Rank of the update's factors; also sets the scale alpha / r.")
    alpha: float = default_field(8, "Scale numerator: the update is multiplied by alpha / r.")
    rank_dropout: float = default_field(0.0, "Training only: probability of dropping each output row of the update.")
    module_dropout: float = default_field(0.0, "Training only: probability of skipping a layer's update for a step.")
    rank_pattern: dict = default_field({}, "Per-module rank: {regex of module name: r}.")
    alpha_pattern: dict = default_field({}, "Per-module alpha: {regex of module name: alpha}.")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"r: must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, int | float) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ConfigError(f"alpha: must be a positive number, got {self.alpha!r}")
        for name in ("rank_dropout", "module_dropout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {value!r}")
        for name in ("rank_pattern", "alpha_pattern"):
            pattern = getattr(self, name)
            if pattern is None:
                continue
            if not isinstance(pattern, dict):
                raise ConfigError(f"{name}: expected a mapping of module-name regex to number, got {pattern!r}")
            for key, value in pattern.items():
                if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                    raise ConfigError(f"{name}[{key!r}]: must be positive, got {value!r}")


def rank_and_alpha(config, module_name: str) -> tuple[int, float]:
    """peft's rule: the first pattern key whose regex matches the end of the module name."""
    r = _pattern_value(config.rank_pattern, module_name, config.r)
    alpha = _pattern_value(config.alpha_pattern, module_name, config.alpha)
    return int(r), float(alpha)


def conv1d_caveat(tuned: nn.Module, adapter_name: str) -> str | None:
    """peft (0.21) wraps only torch layers with LoHa/LoKr, not GPT-2's ``Conv1D``: we do, so say so."""
    names = [path for path, layer in tuned.adapter_layers()
             if isinstance(layer, DeltaWeightLayer) and adapter_name in layer.adapter_names
             and is_fan_in_fan_out(layer.base_layer)]
    if not names:
        return None
    shown = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in names}))
    return f"peft does not apply {tuned.configs[adapter_name].peft_type} to GPT-2 Conv1D layers ({shown})"

"""Machinery every injected layer shares: a frozen base module plus per-adapter state.

An :class:`AdapterLayer` replaces a target module in place. It keeps the original as ``base_layer``
(so parameter paths match peft's: ``q_proj.base_layer.weight``) and holds everything it keeps per
adapter in containers keyed by adapter name (``nn.ModuleDict``, ``nn.ParameterDict``, plain dicts),
each declared once on the class: ``adapter_params`` for the adapter's own tensors (trained and saved),
``adapter_extras`` for the rest (dropout modules, scales, schedules, merge bookkeeping). Naming,
saving, switching and deleting adapters work from those declarations alone, so a new layer gets a
complete delete by declaring its attributes, not by writing one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tuners.targets import is_fan_in_fan_out


class AdapterLayer(nn.Module):
    """Base for wrapper layers. Subclasses declare ``adapter_params`` / ``adapter_extras`` and define
    ``forward``; they create every declared container in ``__init__``.

    ``active_adapter`` is None when no adapter of this layer is active; ``disabled`` turns every
    adapter off (the base behaviour, for side-by-side comparisons).
    """

    # Containers of the adapter's own tensors, saved under ``<attr>.<param>`` (peft's adapter_layer_names).
    adapter_params: tuple[str, ...] = ()
    # Every other attribute that holds something per adapter (peft's other_param_names and more).
    adapter_extras: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.active_adapter: str | None = None
        self.disabled = False
        self.merged_adapters: list[str] = []

    @property
    def adapter_attrs(self) -> tuple[str, ...]:
        """Every per-adapter attribute of this layer: what a delete must empty."""
        return self.adapter_params + self.adapter_extras

    @property
    def adapter_names(self) -> list[str]:
        names: list[str] = []
        for attr in self.adapter_attrs:
            for key in getattr(self, attr):
                if key not in names:
                    names.append(key)
        return names

    def is_active(self) -> bool:
        return not self.disabled and not self.merged_adapters and self.active_adapter is not None

    def adapter_state(self, adapter_name: str) -> dict[str, nn.Parameter]:
        """The adapter's parameters keyed relative to this layer, adapter name removed (peft's keys)."""
        out: dict[str, nn.Parameter] = {}
        for attr in self.adapter_params:
            container = getattr(self, attr)
            if adapter_name not in container:
                continue
            item = container[adapter_name]
            if isinstance(item, nn.Parameter):
                out[attr] = item
            else:
                for pname, param in item.named_parameters():
                    out[f"{attr}.{pname}"] = param
        return out

    def set_adapter(self, adapter_name: str | None) -> None:
        self.active_adapter = adapter_name if adapter_name in self.adapter_names else None

    def delete_adapter(self, adapter_name: str) -> None:
        """Drop everything this layer keeps for ``adapter_name`` (a no-op for a name it does not have)."""
        if adapter_name in self.merged_adapters:
            raise RuntimeError(f"adapter {adapter_name!r} is merged; unmerge it before deleting")
        for attr in self.adapter_attrs:
            container = getattr(self, attr)
            if isinstance(container, set):
                container.discard(adapter_name)
            elif adapter_name in container:
                del container[adapter_name]
        if self.active_adapter == adapter_name:
            self.active_adapter = None

    def merge(self, adapter_name: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be merged into its base layer")

    def unmerge(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be merged into its base layer")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # Model code that reads the wrapped module's attributes (``self.wo.weight.dtype``) keeps working.
            return getattr(super().__getattr__("base_layer"), name)

    def extra_repr(self) -> str:
        return f"active={self.active_adapter!r}, merged={self.merged_adapters}"


def base_weight(layer: nn.Module) -> torch.Tensor:
    """The base layer's weight as (out, in), dequantized if the base is quantized."""
    if hasattr(layer, "dequantize"):
        return layer.dequantize()
    weight = layer.weight
    return weight.T if is_fan_in_fan_out(layer) else weight


def add_to_base_weight(layer: nn.Module, delta: torch.Tensor) -> None:
    """Add an (out, in) delta to a full-precision base weight in place."""
    if getattr(layer, "is_quantized_linear", False):
        raise NotImplementedError("cannot merge into a quantized base layer; load the base in full precision")
    with torch.no_grad():
        if is_fan_in_fan_out(layer):
            delta = delta.T
        layer.weight.add_(delta.to(layer.weight.dtype))


def set_base_weight(layer: nn.Module, weight: torch.Tensor) -> None:
    """Overwrite a full-precision base weight, given as (out, in)."""
    add_to_base_weight(layer, weight - base_weight(layer))


class ModulesToSave(AdapterLayer):
    """A trainable copy of a whole module per adapter (classification heads, embeddings).

    Saved under the original module's path (``score.weight``) as peft does.
    """

    adapter_params = ("modules_to_save",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.modules_to_save = nn.ModuleDict()

    def add(self, adapter_name: str) -> None:
        clone = copy.deepcopy(self.base_layer)
        for p in clone.parameters():
            p.requires_grad_(True)
        self.modules_to_save[adapter_name] = clone
        self.active_adapter = adapter_name

    def adapter_state(self, adapter_name: str) -> dict[str, nn.Parameter]:
        if adapter_name not in self.modules_to_save:
            return {}
        return dict(self.modules_to_save[adapter_name].named_parameters())

    def forward(self, *args, **kwargs):
        if self.disabled or self.active_adapter is None:
            return self.base_layer(*args, **kwargs)
        return self.modules_to_save[self.active_adapter](*args, **kwargs)

    def merge(self, adapter_name: str) -> None:
        raise NotImplementedError("modules_to_save are replaced, not merged: use merge_and_unload")


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)

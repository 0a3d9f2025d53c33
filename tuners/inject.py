"""How an adapter gets into a model's layers and out again: the one routine every method plugs into.

Putting an adapter in is always the same three steps: find the modules it targets, wrap each one in
the method's :class:`~tuners.layers.AdapterLayer` (or reuse the wrapper an earlier adapter of the
same method left there), and add this adapter to the wrapper. A method describes only what differs,
as an :class:`Insertion`; :func:`insert_adapter` does the steps. :func:`remove_adapter` is the way
back: it deletes the adapter from every layer (each layer's declared per-adapter attributes) and puts
the original module back where no adapter is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from tuners.config import AdapterConfig
from tuners.layers import AdapterLayer, replace_module
from tuners.targets import is_fan_in_fan_out, linear_dims, resolve_targets


def is_linear_like(module: nn.Module) -> bool:
    return linear_dims(module) is not None


@dataclass(frozen=True)
class Insertion:
    """What a method tells :func:`insert_adapter` about its layers.

    wrappers: the method's layer classes. A target that already is one of exactly these types (an
        earlier adapter of the method put it there) is reused; a subclass another method builds on
        (UniPELT's gated LoRA) is not the same layer and is not reused.
    wrap: ``(base module, module name) -> new wrapper`` for a target not wrapped yet.
    add: ``(wrapper, adapter name, module name)``: add the adapter's state to the wrapper; it may raise
        :class:`~tuners.config.ConfigError` (a rank too large for the layer, a layer of the other kind).
    accepts: which unwrapped modules the method can adapt (default: linear-like ones); a target it
        cannot adapt is refused by name when targets are resolved from the config.
    """

    wrappers: tuple[type[AdapterLayer], ...]
    wrap: Callable[[nn.Module, str], AdapterLayer]
    add: Callable[[AdapterLayer, str, str], None]
    accepts: Callable[[nn.Module], bool] = is_linear_like

    def can_adapt(self, module: nn.Module) -> bool:
        """One of this method's own wrappers, or a module it accepts; never another method's wrapper
        (two methods are not stacked on one layer)."""
        if type(module) in self.wrappers:
            return True
        return not isinstance(module, AdapterLayer) and self.accepts(module)


def insert_adapter(
    model: nn.Module,
    config: AdapterConfig,
    adapter_name: str,
    insertion: Insertion,
    names: Iterable[str] | None = None,
) -> dict[str, AdapterLayer]:
    """Add adapter ``adapter_name`` to the targeted modules of ``model`` (in place); returns the
    wrappers that hold it by module name.

    ``names``: the modules to adapt, for a method that places itself (bottleneck adapters beside each
    feed-forward block, LLaMA-Adapter's top attention layers). None: ``config.target_modules``,
    resolved against the model and recorded back on the config (the resolved list is what is saved).
    A failure part-way leaves the wrappers made so far; the caller (``TunedModel.add_adapter``) takes
    them out again with :func:`remove_adapter`.
    """
    if names is None:
        names, recorded = resolve_targets(
            model, config.target_modules, config.exclude_modules, accept=insertion.can_adapt
        )
        config.target_modules = recorded
    layers: dict[str, AdapterLayer] = {}
    for name in names:
        module = model.get_submodule(name)
        if type(module) not in insertion.wrappers:
            module = insertion.wrap(module, name)
            replace_module(model, name, module)
        insertion.add(module, adapter_name, name)
        layers[name] = module
    return layers


def remove_adapter(model: nn.Module, adapter_name: str) -> None:
    """Delete ``adapter_name`` from every adapter layer of ``model`` and unwrap each layer left without
    any adapter, so the model holds nothing of it. Innermost layers first, so that a wrapper around a
    wrapper (a module-to-save around a LoRA layer) is unwound from the inside out."""
    for name, layer in reversed(adapter_layers(model)):
        layer.delete_adapter(adapter_name)
        if not layer.adapter_names:
            replace_module(model, name, layer.base_layer)


def adapter_layers(model: nn.Module) -> list[tuple[str, AdapterLayer]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, AdapterLayer)]


def wraps_conv1d(layers: dict[str, AdapterLayer]) -> bool:
    """Whether any of these layers wraps a GPT-2 ``Conv1D`` (peft records ``fan_in_fan_out: true`` then)."""
    return any(is_fan_in_fan_out(layer.base_layer) for layer in layers.values())

"""Layer freezing (peft_type ``LAYER_FREEZE``, tuners only): train the last N blocks, or chosen blocks.

The transformer's block list is found from its structure (see :mod:`tuners.methods.blocks`); every
parameter of the chosen blocks is trained in place and saved under its path. A model with two stacks
(T5's encoder and decoder) applies the choice to each stack. For classification the head is trained
through ``modules_to_save`` as with every method.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.method import Method
from tuners.methods.blocks import block_lists
from tuners.methods.full import base_parameters


@dataclass
class LayerFreezeConfig(AdapterConfig):
    peft_type = "LAYER_FREEZE"

    num_trainable_layers: int = default_field(2, "Train the last N blocks of each stack (ignored if 'layers' is set).")
    layers: list[int] | None = default_field(None, "Train exactly these blocks (0-based; negative counts from the end).")
    train_embeddings: bool = default_field(False, "Also train the token embeddings (and a head tied to them).")
    train_final_norm: bool = default_field(True, "Also train the norm after the last block, where there is one.")

    def validate(self) -> None:
        super().validate()
        if self.target_modules is not None:
            raise ConfigError("target_modules: layer freezing chooses blocks; use 'layers' or 'num_trainable_layers'")
        if self.layers is None:
            if not isinstance(self.num_trainable_layers, int) or self.num_trainable_layers <= 0:
                raise ConfigError(f"num_trainable_layers: must be a positive integer, got {self.num_trainable_layers!r}")
        elif not self.layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers):
            raise ConfigError(f"layers: expected a non-empty list of block indices, got {self.layers!r}")


def chosen_blocks(model: nn.Module, config: LayerFreezeConfig) -> list[str]:
    lists = block_lists(model)
    if not lists:
        raise ConfigError(f"layers: {type(model).__name__} has no recognisable list of transformer blocks")
    chosen = []
    for name in lists:
        n = len(model.get_submodule(name))
        if config.layers is None:
            indices = range(max(0, n - config.num_trainable_layers), n)
        else:
            bad = [i for i in config.layers if not -n <= i < n]
            if bad:
                raise ConfigError(f"layers: {bad} out of range for {name!r}, which has {n} blocks")
            indices = sorted({i % n for i in config.layers})
        chosen.extend(f"{name}.{i}" for i in indices)
    return chosen


def _final_norms(model: nn.Module, lists: list[str]) -> list[str]:
    """Norm layers that are siblings of a block list (``model.norm``, ``transformer.ln_f``, ``final_layer_norm``)."""
    out = []
    for name in lists:
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        container = model.get_submodule(parent) if parent else model
        for child_name, child in container.named_children():
            if "norm" in type(child).__name__.lower() and not isinstance(child, nn.ModuleList):
                out.append(f"{parent}.{child_name}" if parent else child_name)
    return out


def base_trainables(model: nn.Module, config: LayerFreezeConfig) -> dict[str, nn.Parameter]:
    prefixes = chosen_blocks(model, config)
    if config.train_final_norm:
        prefixes += _final_norms(model, block_lists(model))
    embeddings = model.get_input_embeddings() if config.train_embeddings and hasattr(model, "get_input_embeddings") else None
    embedding_ids = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    out = {}
    for path, param in base_parameters(model):
        if any(path.startswith(p + ".") for p in prefixes) or id(param) in embedding_ids:
            out[path] = param
    return out


def inject(model: nn.Module, config: LayerFreezeConfig, adapter_name: str) -> None:
    chosen_blocks(model, config)


METHOD = Method(
    trains_base_weights=True,
    peft_type="LAYER_FREEZE",
    name="Layer freezing",
    family="selective",
    config_cls=LayerFreezeConfig,
    inject=inject,
    base_trainables=base_trainables,
    peft_compatible=False,
    summary="Freeze the lower blocks and train the top N (or chosen) blocks in full.",
    learning_rate=5e-5,
    learning_rate_range=(1e-5, 1e-4),
)

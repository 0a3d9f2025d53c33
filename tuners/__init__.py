"""TuneStudio's PEFT core: plain PyTorch, peft-compatible adapter folders.

    tuned = tuners.apply(model, tuners.LoraConfig(r=8, target_modules="attention"))
    tuned.save_pretrained(path)
    tuned = tuners.load(base_model, path)
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tuners.config import AdapterConfig, ConfigError
from tuners.methods import METHODS, config_from_dict, method_for
from tuners.methods.lora import LoraConfig
from tuners.model import AdapterLoadError, TunedModel

__all__ = [
    "METHODS",
    "AdapterConfig",
    "AdapterLoadError",
    "ConfigError",
    "LoraConfig",
    "TunedModel",
    "apply",
    "config_from_dict",
    "load",
    "method_for",
    "quantize",
]


def apply(model: nn.Module, config: AdapterConfig, adapter_name: str = "default") -> TunedModel:
    """Attach an adapter to ``model`` (modified in place), freeze the base, return the TunedModel."""
    return TunedModel(model, config, adapter_name)


def load(
    base_model: nn.Module, path: str | Path, adapter_name: str = "default", is_trainable: bool = False
) -> TunedModel:
    """Attach the adapter saved at ``path`` (by tuners or by peft) to ``base_model``."""
    from tuners.io import read_adapter

    config, state = read_adapter(Path(path))
    tuned = TunedModel(base_model, config, adapter_name, saved=True)
    tuned.load_adapter_state(state, adapter_name)
    if not is_trainable:
        for p in tuned.parameters():
            p.requires_grad_(False)
    return tuned


def quantize(model: nn.Module, bits: int = 4, **kwargs):
    """Replace the model's linear layers with quantized ones (see :mod:`tuners.quant`)."""
    from tuners.quant import quantize_model

    return quantize_model(model, bits=bits, **kwargs)

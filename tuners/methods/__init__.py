"""The catalogue of PEFT methods, keyed by ``peft_type`` (the value written in adapter_config.json)."""

from __future__ import annotations

from typing import Any

from tuners.config import AdapterConfig, ConfigError
from tuners.method import Method
from tuners.methods import llama_adapter, lora, p_tuning, prefix_tuning, prompt_tuning, unipelt
from tuners.methods.adalora import METHOD as ADALORA
from tuners.methods.bitfit import METHOD as BITFIT
from tuners.methods.bottleneck import METHOD as BOTTLENECK
from tuners.methods.fishmask import METHOD as FISHMASK
from tuners.methods.full import METHOD as FULL
from tuners.methods.ia3 import METHOD as IA3
from tuners.methods.layer_freeze import METHOD as LAYER_FREEZE
from tuners.methods.loha import METHOD as LOHA
from tuners.methods.lokr import METHOD as LOKR
from tuners.methods.ssf import METHOD as SSF

METHODS: dict[str, Method] = {
    m.peft_type: m for m in (lora.METHOD, prompt_tuning.METHOD, prefix_tuning.METHOD, p_tuning.METHOD)
}
METHODS.update({m.peft_type: m for m in (IA3, SSF, BOTTLENECK, BITFIT, LAYER_FREEZE, FISHMASK, FULL)})

METHODS.update({m.peft_type: m for m in (ADALORA, LOHA, LOKR)})

METHODS.update({m.peft_type: m for m in (llama_adapter.METHOD, unipelt.METHOD)})


def method_for(config: AdapterConfig | str) -> Method:
    peft_type = config if isinstance(config, str) else config.peft_type
    try:
        return METHODS[peft_type]
    except KeyError:
        raise ConfigError(f"peft_type: unknown method {peft_type!r}; known: {', '.join(METHODS)}") from None


def config_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """The config object for an adapter_config.json dict, chosen by its ``peft_type``."""
    if "peft_type" not in data:
        raise ConfigError("peft_type: missing from adapter config")
    return method_for(data["peft_type"]).config_cls.from_dict(data)

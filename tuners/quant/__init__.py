"""Quantized frozen bases for adapter training (QLoRA and friends): NF4 (+ double quantization), int8.

    model = tuners.quantize(model, bits=4, double_quant=True, compute_dtype=torch.bfloat16)
    tuned = tuners.apply(model, tuners.LoraConfig(target_modules="all-linear"))

Every linear layer becomes a :class:`QuantizedLinear` except the output head and classification
heads, the modules the model asks to keep in fp32 (``_keep_in_fp32_modules``, e.g. T5's ``wo``)
and those named in ``skip``. Embeddings and norms are not linear layers and stay as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from tuners.config import ConfigError
from tuners.layers import AdapterLayer, replace_module
from tuners.quant.int8 import dequantize_int8, quantize_int8
from tuners.quant.linear import COMPUTE_DTYPES, DequantizedMatmul, PackedWeight, QuantizedLinear, stored_bytes
from tuners.quant.nf4 import NF4Weight, dequantize_nf4, quantize_nf4
from tuners.targets import head_module_names, linear_dims, matches

__all__ = [
    "COMPUTE_DTYPES",
    "DequantizedMatmul",
    "NF4Weight",
    "PackedWeight",
    "QuantizedLinear",
    "dequantize_int8",
    "dequantize_nf4",
    "quantize_int8",
    "quantize_model",
    "quantizable_layers",
    "quantize_nf4",
    "quantized_layers",
    "stored_bytes",
]


def quantize_model(
    model: nn.Module,
    bits: int = 4,
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.float32,
    skip: list[str] | tuple[str, ...] = (),
    blocksize: int = 64,
) -> nn.Module:
    """Replace the model's linear layers by quantized ones, in place; returns the model.

    ``skip`` names modules to keep in full precision, matched like ``target_modules`` (a full name
    or its trailing ``.``-separated part). Quantize before attaching adapters.
    """
    if bits not in (4, 8):
        raise ConfigError(f"bits: must be 4 (NF4) or 8 (int8), got {bits!r}")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype: must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    if blocksize <= 0 or blocksize % 2:
        raise ConfigError(f"blocksize: must be a positive even number, got {blocksize!r}")
    if any(isinstance(m, AdapterLayer) for m in model.modules()):
        raise ConfigError("quantize: the model already carries adapters; quantize the base model first, then apply")
    for name, module in quantizable_layers(model, skip):
        layer = QuantizedLinear.from_linear(
            module, bits=bits, double_quant=double_quant, compute_dtype=compute_dtype, blocksize=blocksize
        )
        replace_module(model, name, layer)
    return model


def quantizable_layers(model: nn.Module, skip: list[str] | tuple[str, ...] = ()) -> list[tuple[str, nn.Module]]:
    """(name, module) of the linear layers :func:`quantize_model` replaces: every linear layer but the
    heads, the model's ``_keep_in_fp32_modules`` and ``skip``. Works on a meta-device model, so a
    memory estimate prices exactly the layers a run quantizes."""
    keep = set(head_module_names(model))
    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    skip = list(skip)
    layers = []
    for name, module in model.named_modules():
        if not name or linear_dims(module) is None or getattr(module, "is_quantized_linear", False):
            continue
        if any(name == h or name.startswith(h + ".") for h in keep) or matches(name, skip) or matches(name, keep_fp32):
            continue
        layers.append((name, module))
    return layers


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}

"""The precision a run trains in, and how its tensors are stored for it.

``training.bf16: auto`` trains in bf16 wherever the hardware multiplies in it (the rule is
:func:`app.core.devices.bf16_supported`: CUDA with bf16, CPUs with AVX512-BF16 or AMX); ``true``
insists and is refused, with the reason, where bf16 would be emulated. Training in bf16 means bf16
autocast *and* a frozen base stored in bf16: autocast would cast every fp32 base weight to bf16 on
every step anyway, so storing it that way halves its memory and drops the per-step casts. What the
optimizer updates (the adapter, or base tensors a method trains) stays fp32, and so does the
optimizer's state: small updates to bf16 weights would round away.
"""

from __future__ import annotations

import torch
from torch import nn

from app.core.devices import bf16_reason, bf16_supported, trains_in_bf16
from app.core.spec import SpecError


def train_in_bf16(setting: bool | str, device: torch.device) -> bool:
    """``training.bf16`` (true, false or "auto") on ``device``: whether the run trains in bf16."""
    if setting is True and not bf16_supported(device):
        raise SpecError("training.bf16", f"bf16 was asked for, but {bf16_reason(device)}; "
                                         "set it to auto or false")
    return trains_in_bf16(setting, device)


def store_frozen_in(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen floating-point parameters of ``model`` in ``dtype``, in place; returns how many
    were converted.

    A module that trains any of its own tensors keeps all of them as they are: trained tensors stay
    fp32 for the optimizer, and ops outside autocast's list (layer_norm on the CPU) refuse a bf16 weight
    beside an fp32 bias (BitFit). Buffers keep their dtype (rotary frequencies lose precision in bf16),
    and so do quantized layers (their scales are part of the quantization).
    """
    converted = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if getattr(module, "is_quantized_linear", False) or any(p.requires_grad for p in own):
            continue
        for param in own:
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
                converted += 1
    return converted

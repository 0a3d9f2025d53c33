"""int8 weight-only quantization with one absmax per output row.

    q = round(W · 127 / a_row),   W ≈ q · a_row / 127

Rows are the natural unit: each output feature keeps its own range, and dequantization is a
broadcast multiply. 8 + 32/in_features bits per parameter.
"""

from __future__ import annotations

import torch


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), row absmax fp32 (out,)) of a 2-D weight."""
    weight = weight.float()
    absmax = weight.abs().amax(dim=1)
    q = torch.round(weight * (127.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp_(-127, 127)
    return q.to(torch.int8), absmax


def dequantize_int8(q: torch.Tensor, absmax: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * (absmax.float() / 127.0).unsqueeze(1)).to(dtype)

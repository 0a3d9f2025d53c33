"""A frozen linear layer whose weight is stored quantized (NF4 or int8) and dequantized on the fly.

    y = x · dequant(Q)ᵀ + b

computed in ``compute_dtype`` (fp32 or bf16) and returned in the input's dtype. The layer keeps
only the quantized weight and its statistics: the dequantized matrix lives for one matmul. The
backward pass (through :class:`DequantizedMatmul`) saves nothing but those same stored tensors and
recomputes dequant(Q) for the input gradient ``∂L/∂x = ∂L/∂y · dequant(Q)``; the weight itself is
frozen, so no weight gradient exists. The bias stays in full precision (and may be trained).

Adapter methods wrap this layer like any linear (``is_quantized_linear``, ``in_features``,
``out_features``, ``bias``, ``dequantize()``): QLoRA is LoRA on top of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuners.quant.int8 import dequantize_int8, quantize_int8
from tuners.quant.nf4 import (
    ABSMAX_BLOCKSIZE,
    BLOCKSIZE,
    NF4Weight,
    dequantize_packed,
    quantize_nf4,
)
from tuners.targets import is_fan_in_fan_out, linear_dims

COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class PackedWeight(nn.Parameter):
    """Packed 4-bit codes, two per byte: a frozen uint8 parameter (integer tensors cannot get grads).

    A parameter rather than a buffer so parameter counts match peft + bitsandbytes, which count a
    packed byte as two parameters (``packed_4bit``); see ``tuners.model._numel``.
    """

    packed_4bit = True

    def __new__(cls, data: torch.Tensor | None = None, requires_grad: bool = False):
        return super().__new__(cls, data, requires_grad=False)


def stored_bytes(out_features: int, in_features: int, bits: int = 4, double_quant: bool = True,
                 blocksize: int = BLOCKSIZE) -> int:
    """Bytes :class:`QuantizedLinear` keeps for an (out, in) weight, bias excluded, without quantizing it:
    what a memory estimate prices (equal to ``QuantizedLinear.storage_bytes()``).

    int8: one byte a weight + an fp32 absmax per row. NF4: two codes a byte + an fp32 absmax per block;
    double quantized, a uint8 absmax per block + an fp32 scale per 256 blocks + one fp32 offset."""
    n = out_features * in_features
    if bits == 8:
        return n + 4 * out_features
    blocks = -(n // -blocksize)
    packed = -(n // -2)
    if double_quant:
        return packed + blocks + 4 * -(blocks // -ABSMAX_BLOCKSIZE) + 4
    return packed + 4 * blocks


class DequantizedMatmul(torch.autograd.Function):
    """x · dequant(state)ᵀ, saving only the quantized state for backward (no dequantized copy)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QuantizedLinear, *state: torch.Tensor) -> torch.Tensor:
        ctx.layer = layer
        ctx.save_for_backward(*state)
        return F.linear(x, layer.dequantize_state(*state))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_x = None
        if ctx.needs_input_grad[0]:
            weight = ctx.layer.dequantize_state(*ctx.saved_tensors)
            grad_x = grad_output.to(weight.dtype) @ weight
        return (grad_x, None) + (None,) * len(ctx.saved_tensors)


class QuantizedLinear(nn.Module):
    """NF4 (``bits=4``, optionally double quantized) or int8 (``bits=8``, per-row absmax) linear.

    Stored tensors: ``qweight`` (NF4: packed uint8 codes; int8: (out, in) int8) and ``absmax``
    (NF4: per 64-block, fp32 or uint8 when double quantized with ``absmax_scale``/``absmax_offset``;
    int8: per row, fp32).
    """

    is_quantized_linear = True

    def __init__(
        self,
        weight: torch.Tensor,
        bias: nn.Parameter | None,
        bits: int = 4,
        double_quant: bool = True,
        compute_dtype: torch.dtype = torch.float32,
        blocksize: int = BLOCKSIZE,
    ) -> None:
        """``weight`` is the (out, in) float weight to quantize; it is not kept."""
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"bits: must be 4 (NF4) or 8 (int8), got {bits!r}")
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype: must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
        self.out_features, self.in_features = weight.shape
        self.bits = bits
        self.compute_dtype = compute_dtype
        self.blocksize = blocksize
        self.double_quant = bits == 4 and double_quant
        with torch.no_grad():
            if bits == 4:
                stored = quantize_nf4(weight.detach(), blocksize, self.double_quant)
                self.qweight = PackedWeight(stored.packed)
                self.register_buffer("absmax", stored.absmax)
                self.register_buffer("absmax_scale", stored.absmax_scale)
                self.register_buffer("absmax_offset", stored.absmax_offset)
            else:
                q, absmax = quantize_int8(weight.detach())
                self.qweight = nn.Parameter(q, requires_grad=False)
                self.register_buffer("absmax", absmax)
        self.bias = bias

    @classmethod
    def from_linear(cls, module: nn.Module, **kwargs) -> QuantizedLinear:
        """Quantize an ``nn.Linear`` or GPT-2 ``Conv1D`` (weight stored (in, out))."""
        if linear_dims(module) is None or getattr(module, "is_quantized_linear", False):
            raise TypeError(f"cannot quantize a {type(module).__name__}: expected nn.Linear or Conv1D")
        weight = module.weight.T if is_fan_in_fan_out(module) else module.weight
        return cls(weight, module.bias, **kwargs)

    def quantized_state(self) -> tuple[torch.Tensor, ...]:
        if self.bits == 8:
            return self.qweight, self.absmax
        if self.double_quant:
            return self.qweight, self.absmax, self.absmax_scale, self.absmax_offset
        return self.qweight, self.absmax

    def dequantize_state(self, *state: torch.Tensor) -> torch.Tensor:
        """The (out, in) weight in ``compute_dtype`` from the stored tensors given."""
        if self.bits == 8:
            return dequantize_int8(state[0], state[1], self.compute_dtype)
        scale, offset = (state[2], state[3]) if self.double_quant else (None, None)
        shape = (self.out_features, self.in_features)
        return dequantize_packed(state[0], state[1], shape, self.blocksize, self.compute_dtype, scale, offset)

    def dequantize(self) -> torch.Tensor:
        return self.dequantize_state(*self.quantized_state())

    def nf4_weight(self) -> NF4Weight:
        if self.bits != 4:
            raise ValueError("nf4_weight: this layer is int8")
        return NF4Weight(
            packed=self.qweight.data, absmax=self.absmax, shape=(self.out_features, self.in_features),
            blocksize=self.blocksize, absmax_scale=self.absmax_scale, absmax_offset=self.absmax_offset,
        )

    def storage_bytes(self) -> int:
        """Bytes of the quantized weight and its statistics (bias excluded)."""
        return sum(t.numel() * t.element_size() for t in self.quantized_state())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = DequantizedMatmul.apply(x.to(self.compute_dtype), self, *self.quantized_state()).to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def _apply(self, fn, recurse: bool = True):
        """Moves follow the model; dtype casts (``model.to(torch.bfloat16)``) never touch the statistics."""
        stats = {name: buf for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, original in stats.items():
            moved = self._buffers[name]
            if moved.dtype != original.dtype:
                self._buffers[name] = original.to(moved.device)
        return self

    def extra_repr(self) -> str:
        kind = "nf4" + (", double_quant" if self.double_quant else "") if self.bits == 4 else "int8"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"{kind}, compute_dtype={self.compute_dtype}"
        )

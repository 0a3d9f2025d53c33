"""NF4: 4-bit NormalFloat with blockwise absmax, and double quantization of the absmax values.

A weight is flattened row-major and cut into blocks of 64 values. Each block keeps its absolute
maximum ``a`` (fp32) and, per value, the index of the NF4 code nearest to ``x / a``; two indices
share a byte, the even element in the high nibble. Dequantization is ``code[i] · a``.

Double quantization (QLoRA) stores the absmax values themselves in 8 bits: subtract their mean,
cut them into blocks of 256, keep one fp32 scale per block and an index into the signed dynamic
8-bit map, chosen through the same 65536-step table as bitsandbytes' CPU kernel (so the bytes are
theirs, not always the nearest map value). Storage per parameter:

    4 + 32/64 = 4.5 bits            without double quantization
    4 + 8/64 + 32/(64·256) ≈ 4.127  with it

Everything here is plain tensor code, device-agnostic. :func:`dequantize_packed` uses the fused
C++ kernel of :mod:`tuners.quant.cpu_kernel` on CPU where it is available (bit-identical results),
and ``dequantize_nf4_tensors`` has a compiled twin used on CUDA only (see :func:`dequantizer`).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BLOCKSIZE = 64
ABSMAX_BLOCKSIZE = 256

# The 16 NF4 levels: quantiles of N(0, 1) rescaled to [-1, 1], with an exact zero (QLoRA, appendix E).
NF4_CODES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)


@dataclass
class NF4Weight:
    """The stored form of one NF4 weight.

    ``absmax`` is fp32 (one per block) without double quantization; with it, ``absmax`` holds uint8
    indices into the dynamic map and ``absmax_scale`` / ``absmax_offset`` undo that second step.
    """

    packed: torch.Tensor  # uint8, ceil(numel / 2)
    absmax: torch.Tensor  # fp32 (blocks,) or uint8 (blocks,) when double quantized
    shape: tuple[int, ...]
    blocksize: int = BLOCKSIZE
    absmax_scale: torch.Tensor | None = None  # fp32 (ceil(blocks / 256),)
    absmax_offset: torch.Tensor | None = None  # fp32 scalar: the mean that was subtracted

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    def storage_bytes(self) -> int:
        tensors = [self.packed, self.absmax, self.absmax_scale, self.absmax_offset]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def nf4_codes(device: torch.device | str | None = None) -> torch.Tensor:
    return torch.tensor(NF4_CODES, dtype=torch.float32, device=device)


@functools.cache
def _dynamic_map_values() -> tuple[float, ...]:
    """The signed dynamic 8-bit map (Dettmers, 2015): a sign, a run of zero bits giving a decimal
    exponent 10^-6..10^0, and a linear fraction in (0.1, 1) with the bits that remain; plus 0 and 1.

    Dense near zero and coarse near ±1, which suits mean-centred absmax values.
    """
    exponent_bits, value_bits = 7, 7
    values: list[float] = []
    for i in range(exponent_bits):
        items = 2 ** (i + value_bits - exponent_bits) + 1
        bounds = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        scale = 10 ** (-(exponent_bits - 1) + i)
        values += (scale * means).tolist() + (-scale * means).tolist()  # fp32 products, as bitsandbytes
    values += [0.0, 1.0]
    values += [0.0] * (256 - len(values))
    return tuple(sorted(values))


def dynamic_map(device: torch.device | str | None = None) -> torch.Tensor:
    return torch.tensor(_dynamic_map_values(), dtype=torch.float32, device=device)


@functools.cache
def _dynamic_map_on(device: torch.device) -> torch.Tensor:
    return dynamic_map(device)


def _nf4_blocks(flat: torch.Tensor, blocksize: int, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of ``blocksize`` values: absmax (fp32) and the index of the nearest NF4 code to x / absmax.

    Written the way bitsandbytes writes it, so every byte agrees: full blocks multiply by the
    reciprocal of the absmax, while a partial last block divides by its absmax (the two can round
    a value onto different sides of a code midpoint) and stores that absmax clamped to 1e-38.
    """
    n = flat.numel()
    full = n - n % blocksize
    values = flat.float()
    head = values[:full].view(-1, blocksize)
    absmax = head.abs().amax(dim=1)
    scaled = (head * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).view(-1)
    if full < n:
        tail_absmax = values[full:].abs().amax().clamp(min=1e-38)
        absmax = torch.cat([absmax, tail_absmax.view(1)])
        scaled = torch.cat([scaled, values[full:] / tail_absmax])
    midpoints = (codes[:-1] + codes[1:]) / 2  # codes are sorted: nearest code = bucket between midpoints
    index = torch.bucketize(scaled.clamp_(-1, 1), midpoints, out_int32=True)
    return absmax, index.to(torch.uint8)


_LUT_SIZE = 65536


@functools.cache
def _dynamic_lut_on(device: torch.device) -> torch.Tensor:
    """(65536,) uint8: the dynamic-map index bitsandbytes' CPU kernel assigns to each of 65536 evenly
    spaced steps across [-1, 1], i.e. how many map midpoints lie strictly below the step's value.

    Its blockwise 8-bit quantization reads codes from this table instead of searching the map, so a
    value gets the code of its step, not always the nearest one (the map is far finer than a step
    near 0, where mean-centred absmax values crowd). Built in fp32 exactly as its C++ does.
    """
    code = dynamic_map()
    midpoints = (code[:-1] + code[1:]) * 0.5
    steps = torch.arange(_LUT_SIZE, dtype=torch.float32) * 2.0 / (_LUT_SIZE - 1) - 1.0
    return torch.searchsorted(midpoints, steps).to(torch.uint8).to(device)


def _quantize_absmax(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise 8-bit quantization of mean-centred absmax values, identical to bitsandbytes' CPU
    ``quantize_blockwise(values, blocksize=256)``: fp32 scale per 256-block (a partial last block
    over its own values), x · (1/scale) clamped to [-1, 1], rounded to its step of the 65536-entry
    table, and code 0 for every value of a block whose scale is 0.

    Its C++ computes the step with an FMA, ``(x + 1) · 0.5 · 65535 + 0.5`` rounded once; the plain
    fp32 expression below gives the same step for every fp32 input (checked exhaustively: ``x + 1``
    always lands on a multiple of 2^-24, where the two never disagree).
    """
    n = values.numel()
    blocks = -(n // -ABSMAX_BLOCKSIZE)
    padded = F.pad(values.float(), (0, blocks * ABSMAX_BLOCKSIZE - n)).view(blocks, ABSMAX_BLOCKSIZE)
    scale = padded.abs().amax(dim=1)
    inverse = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    scaled = (padded * inverse.unsqueeze(1)).clamp_(-1, 1)
    step = ((scaled + 1.0) * 0.5 * (_LUT_SIZE - 1) + 0.5).to(torch.int32)
    index = _dynamic_lut_on(values.device)[step.view(-1)].view(blocks, ABSMAX_BLOCKSIZE)
    index.masked_fill_((scale == 0).unsqueeze(1), 0)
    return scale, index.view(-1)[:n]


def quantize_nf4(
    weight: torch.Tensor, blocksize: int = BLOCKSIZE, double_quant: bool = True
) -> NF4Weight:
    """Quantize a float tensor to NF4 (weights are small enough to quantize one at a time)."""
    absmax, index = _nf4_blocks(weight.reshape(-1), blocksize, nf4_codes(weight.device))
    if index.numel() % 2:
        index = F.pad(index, (0, 1), value=NF4_CODES.index(0.0))
    packed = (index[0::2] << 4) | index[1::2]
    stored = NF4Weight(packed=packed, absmax=absmax, shape=tuple(weight.shape), blocksize=blocksize)
    if double_quant:
        offset = absmax.mean()
        scale, qabsmax = _quantize_absmax(absmax - offset)
        stored.absmax, stored.absmax_scale, stored.absmax_offset = qabsmax, scale, offset
    return stored


def dequantize_absmax(qabsmax: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Undo double quantization: dynamic_map[q] · scale of its 256-block + offset (fp32)."""
    n = qabsmax.numel()
    values = _dynamic_map_on(qabsmax.device)[qabsmax.long()]
    values = F.pad(values, (0, scale.numel() * ABSMAX_BLOCKSIZE - n)).view(-1, ABSMAX_BLOCKSIZE)
    return (values * scale.float().unsqueeze(1)).view(-1)[:n] + offset.float()


@functools.cache
def _byte_table(device: torch.device) -> torch.Tensor:
    """(256, 2) fp32: the two NF4 values a packed byte stands for, so unpacking is one gather.

    A constant, built once per device (never written to).
    """
    pairs = [(NF4_CODES[b >> 4], NF4_CODES[b & 0xF]) for b in range(256)]
    return torch.tensor(pairs, dtype=torch.float32, device=device)


@functools.cache
def _byte_pair_table(device: torch.device) -> torch.Tensor:
    """(65536, 4) fp32: the four NF4 values of two packed bytes read as one little-endian uint16.

    Halves the number of gathered rows, which is what eager dequantization costs on CPU (1 MiB).
    """
    values = torch.arange(65536, device=device)
    single = _byte_table(device)
    return torch.cat([single[values & 0xFF], single[values >> 8]], dim=1)


def unpack_table(packed: torch.Tensor) -> torch.Tensor:
    """The lookup table :func:`dequantize_nf4_tensors` should gather from for ``packed``."""
    wide = packed.device.type == "cpu" and packed.numel() % 2 == 0 and sys.byteorder == "little"
    return _byte_pair_table(packed.device) if wide else _byte_table(packed.device)


def dequantize_nf4_tensors(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    table: torch.Tensor,
    shape: tuple[int, ...],
    blocksize: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """code[i] · absmax of its block, computed in fp32 and cast to ``dtype`` (bitsandbytes' order)."""
    n = 1
    for d in shape:
        n *= d
    index = packed.view(-1).int() if table.shape[1] == 2 else packed.view(-1).view(torch.uint16).int()
    values = table.index_select(0, index).view(-1)
    blocks = absmax.numel()
    if values.numel() != blocks * blocksize:
        values = F.pad(values[:n], (0, blocks * blocksize - n))
    out = values.view(blocks, blocksize).mul_(absmax.float().view(blocks, 1))
    return out.view(-1)[:n].view(shape).to(dtype)


@functools.cache
def _compiled_dequantize():
    return torch.compile(dequantize_nf4_tensors, dynamic=False, fullgraph=True)


def dequantizer(device: torch.device):
    """The dequantize function for tensors on ``device``: compiled (fused) on CUDA, eager elsewhere.

    CPU never compiles (measured: inductor's version is ~1.3x faster than eager, the C++ kernel ~7x;
    see docs/quant.md); this eager function is the CPU fallback when the kernel is unavailable.
    """
    return _compiled_dequantize() if device.type == "cuda" else dequantize_nf4_tensors


def _cpu_kernel_dequantize(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    shape: tuple[int, ...],
    blocksize: int,
    dtype: torch.dtype,
    absmax_scale: torch.Tensor | None,
    absmax_offset: torch.Tensor | None,
) -> torch.Tensor | None:
    """The C++ kernel's result (bit-identical to the eager path), or ``None`` where it does not apply."""
    if packed.device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or blocksize % 2:
        return None
    from tuners.quant import cpu_kernel

    kernel = cpu_kernel.load()
    if kernel is None:
        return None
    n = 1
    for d in shape:
        n *= d
    device = packed.device
    double_quant = absmax_scale is not None
    out = kernel.dequantize_nf4(
        packed.contiguous().view(-1),
        absmax.contiguous() if double_quant else absmax.float().contiguous(),
        _nf4_codes_on(device),
        _dynamic_map_on(device) if double_quant else None,
        absmax_scale.float().contiguous() if double_quant else None,
        absmax_offset.float().reshape(1) if double_quant else None,
        ABSMAX_BLOCKSIZE,
        blocksize,
        dtype == torch.bfloat16,
    )
    return out[:n].view(shape)


@functools.cache
def _nf4_codes_on(device: torch.device) -> torch.Tensor:
    return nf4_codes(device)


def dequantize_packed(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    shape: tuple[int, ...],
    blocksize: int = BLOCKSIZE,
    dtype: torch.dtype = torch.float32,
    absmax_scale: torch.Tensor | None = None,
    absmax_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dequantize stored NF4 tensors (``absmax`` double quantized when ``absmax_scale`` is given).

    CPU: the C++ kernel of :mod:`tuners.quant.cpu_kernel` when it is available (one fused pass,
    absmax decode included); otherwise, and on other devices, the tensor code below.
    """
    fused = _cpu_kernel_dequantize(packed, absmax, shape, blocksize, dtype, absmax_scale, absmax_offset)
    if fused is not None:
        return fused
    if absmax_scale is not None:
        absmax = dequantize_absmax(absmax, absmax_scale, absmax_offset)
    table = unpack_table(packed)
    return dequantizer(packed.device)(packed, absmax, table, shape, blocksize, dtype)


def dequantize_nf4(stored: NF4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return dequantize_packed(
        stored.packed, stored.absmax, stored.shape, stored.blocksize, dtype, stored.absmax_scale, stored.absmax_offset
    )

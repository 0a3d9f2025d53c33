"""NF4 and int8 quantization against the math and against bitsandbytes' CPU implementation (oracle)."""

import bitsandbytes.functional as bnbf
import pytest
import torch

from tuners.quant import cpu_kernel, dequantize_int8, dequantize_nf4, quantize_int8, quantize_nf4
from tuners.quant.nf4 import (
    NF4_CODES,
    NF4Weight,
    _cpu_kernel_dequantize,
    _quantize_absmax,
    dequantize_absmax,
    dequantize_nf4_tensors,
    dequantizer,
    dynamic_map,
    unpack_table,
)

SHAPES = [(64, 64), (128, 96), (33, 17), (7,), (300, 257), (2, 3, 128)]


def _weight(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.02


def _bnb(weight, double_quant):
    return bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=double_quant)


@pytest.mark.parametrize("shape", SHAPES)
def test_nf4_packing_and_absmax_are_bit_exact_with_bitsandbytes(shape):
    weight = _weight(shape)
    ours = quantize_nf4(weight, double_quant=False)
    packed, state = _bnb(weight, double_quant=False)
    assert ours.packed.dtype == torch.uint8
    assert torch.equal(ours.packed, packed.view(-1))
    assert torch.equal(ours.absmax, state.absmax)


# Realistic Linear weights; several leave the last 256-block of absmax values partial (300, 257,
# 1500, 2032, 16000 64-blocks). Last dims are multiples of 64 or not of 16: bitsandbytes' AVX-512
# CPU dequantization indexes absmax per row when the last dim is a multiple of 16, which is only
# right when it is also a multiple of 64 (e.g. (96, 208) it gets wrong, so it is no oracle there).
DQ_SHAPES = [(300, 64), (257 * 64, 1), (96, 200), (100, 960), (1000, 130), (1024, 1000), (2816, 1024), (11008, 64)]


def _assert_same_as_bitsandbytes(weight, double_quant):
    ours = quantize_nf4(weight, double_quant=double_quant)
    packed, state = _bnb(weight, double_quant)
    assert torch.equal(ours.packed, packed.view(-1))
    assert torch.equal(ours.absmax, state.absmax)
    if double_quant:
        assert ours.absmax.dtype == torch.uint8
        assert torch.equal(ours.absmax_scale, state.state2.absmax)
        assert torch.equal(ours.absmax_offset, state.offset)
        their_absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
        assert torch.equal(dequantize_absmax(ours.absmax, ours.absmax_scale, ours.absmax_offset), their_absmax)
    theirs = bnbf.dequantize_4bit(packed, state).reshape(weight.shape)  # its CPU kernel returns 1-D as (1, n)
    assert torch.equal(dequantize_nf4(ours), theirs)
    assert torch.equal(_eager(ours, torch.float32), theirs)


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("shape", DQ_SHAPES)
def test_nf4_bytes_and_dequantized_values_equal_bitsandbytes(shape, double_quant):
    """Packed codes, absmax (fp32, or uint8 codes + fp32 scales + offset) and dequantized weights.

    Both libraries pack two codes per byte with the even element in the high nibble, so the packed
    bytes are compared as they are.
    """
    _assert_same_as_bitsandbytes(_weight(shape, seed=8), double_quant)


@pytest.mark.parametrize("shape", SHAPES)
def test_double_quantized_statistics_match_bitsandbytes(shape):
    weight = _weight(shape, seed=1)
    ours = quantize_nf4(weight, double_quant=True)
    packed, state = _bnb(weight, double_quant=True)
    assert torch.equal(ours.packed, packed.view(-1))
    assert torch.equal(ours.absmax, state.absmax)
    assert torch.equal(ours.absmax_offset, state.offset)
    assert torch.equal(ours.absmax_scale, state.state2.absmax)
    their_absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
    assert torch.equal(dequantize_absmax(ours.absmax, ours.absmax_scale, ours.absmax_offset), their_absmax)


def test_absmax_codes_follow_bitsandbytes_cpu_table_on_a_dense_sweep():
    """Its CPU kernel reads 8-bit codes from a 65536-step table, not the nearest map value; a dense
    sweep of [-1, 1] (and of the tiny values near 0, where the map is finer than a step) covers
    every step and both sides of its edges."""
    g = torch.Generator().manual_seed(9)
    steps = torch.linspace(-1, 1, 65536 * 8)
    tiny = torch.logspace(-9, -3, 8192) * torch.tensor([1.0, -1.0]).repeat(4096)
    values = torch.cat([steps, tiny, torch.rand(100_000, generator=g) * 2 - 1])
    blocks = values[: values.numel() // 255 * 255].view(-1, 255)
    values = torch.cat([torch.ones(blocks.shape[0], 1), blocks], dim=1).view(-1)  # every block's scale is 1
    scale, codes = _quantize_absmax(values)
    their_codes, their_state = bnbf.quantize_blockwise(values, blocksize=256)
    assert torch.equal(scale, their_state.absmax)
    assert torch.equal(codes, their_codes)


def test_absmax_blocks_without_spread_get_code_zero_like_bitsandbytes():
    """Equal absmax everywhere: every centred value and scale is 0; bitsandbytes writes code 0."""
    weight = torch.full((768, 64), 0.5)
    weight[:, 1::2] = -0.5
    ours = quantize_nf4(weight, double_quant=True)
    assert not ours.absmax_scale.any() and not ours.absmax.any()
    _assert_same_as_bitsandbytes(weight, double_quant=True)
    assert torch.equal(dequantize_nf4(ours), weight)


@pytest.mark.parametrize("double_quant", [True, False])
def test_partial_last_block_is_scaled_as_bitsandbytes_does(double_quant):
    """Its partial last 64-block divides by the absmax (full blocks multiply by its reciprocal) and
    stores the absmax clamped to 1e-38; -0.0304... / 0.0661... rounds into a different NF4 bucket
    than -0.0304... · (1 / 0.0661...), and an all-zero tail keeps absmax 1e-38."""
    head = _weight(64, seed=10)
    split = torch.cat([head, torch.tensor([0.06610545516014099, -0.03040819615125656, -0.06610545516014099, 0.0])])
    zero_tail = torch.cat([_weight(128, seed=11), torch.zeros(6)])
    for weight in (split, zero_tail):
        _assert_same_as_bitsandbytes(weight, double_quant)
    assert quantize_nf4(zero_tail, double_quant=False).absmax[-1] == torch.tensor(1e-38)


def test_dynamic_map_is_bitsandbytes_signed_dynamic_map():
    assert torch.equal(dynamic_map(), bnbf.create_dynamic_map(signed=True))


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_reconstruction_error_is_no_worse_than_bitsandbytes(shape, double_quant):
    weight = _weight(shape, seed=2)
    ours = dequantize_nf4(quantize_nf4(weight, double_quant=double_quant))
    theirs = bnbf.dequantize_4bit(*_bnb(weight, double_quant))
    assert ours.shape == weight.shape
    our_err = (ours - weight).pow(2).mean().item()
    their_err = (theirs - weight).pow(2).mean().item()
    assert our_err <= their_err * (1 + 1e-6)
    if shape[-1] % 64 == 0:  # bitsandbytes' CPU kernel is row-blocked; where it is exact, so are we
        assert torch.equal(ours, theirs)


def test_dequantized_values_are_codes_times_block_absmax():
    weight = _weight((4, 64), seed=3)
    stored = quantize_nf4(weight, double_quant=False)
    codes = torch.tensor(NF4_CODES)
    high, low = (stored.packed >> 4).long(), (stored.packed & 0xF).long()
    index = torch.stack([high, low], dim=1).view(-1)
    expected = (codes[index].view(4, 64) * stored.absmax.view(4, 1)).view(4, 64)
    assert torch.equal(dequantize_nf4(stored), expected)
    nearest = (weight.view(4, 64, 1) / stored.absmax.view(4, 1, 1) - codes).abs().argmin(dim=-1)
    assert torch.equal(index.view(4, 64), nearest)


def test_all_zero_blocks_dequantize_to_zero():
    weight = torch.zeros(3, 64)
    weight[1] = _weight(64)
    for double_quant in (False, True):
        out = dequantize_nf4(quantize_nf4(weight, double_quant=double_quant))
        assert torch.isfinite(out).all()
        assert torch.equal(out[0], torch.zeros(64)) and torch.equal(out[2], torch.zeros(64))


def test_storage_bits_per_parameter_from_tensor_sizes():
    weight = _weight((1024, 4096), seed=4)
    n = weight.numel()
    plain = quantize_nf4(weight, double_quant=False)
    double = quantize_nf4(weight, double_quant=True)
    assert plain.storage_bytes() * 8 / n == pytest.approx(4.5, abs=1e-9)
    assert double.storage_bytes() * 8 / n == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-5)
    assert double.storage_bytes() * 8 / n == pytest.approx(4.127, abs=1e-3)


def test_dequantize_casts_to_compute_dtype_after_fp32_math():
    weight = _weight((64, 128), seed=5)
    stored = quantize_nf4(weight)
    assert torch.equal(dequantize_nf4(stored, torch.bfloat16), dequantize_nf4(stored).to(torch.bfloat16))


def test_cpu_never_uses_the_compiled_dequantizer():
    assert dequantizer(torch.device("cpu")) is dequantize_nf4_tensors


def _eager(stored, dtype):
    absmax = stored.absmax
    if stored.double_quant:
        absmax = dequantize_absmax(absmax, stored.absmax_scale, stored.absmax_offset)
    return dequantize_nf4_tensors(stored.packed, absmax, unpack_table(stored.packed), stored.shape, stored.blocksize, dtype)


def _kernel(stored, dtype):
    if cpu_kernel.load() is None:
        pytest.skip("the C++ NF4 kernel is switched off (TUNERS_NF4_CPU_KERNEL=0) or could not be built here")
    out = _cpu_kernel_dequantize(
        stored.packed, stored.absmax, stored.shape, stored.blocksize, dtype, stored.absmax_scale, stored.absmax_offset
    )
    assert out is not None
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("shape", [*SHAPES, (5, 1000), (1, 1), (96, 4096)])
def test_cpu_kernel_is_bit_identical_to_the_eager_dequantization(shape, double_quant, dtype):
    stored = quantize_nf4(_weight(shape, seed=7) * 50, double_quant=double_quant)
    ours = _kernel(stored, dtype)
    assert ours.dtype == dtype and ours.shape == torch.Size(shape)
    assert torch.equal(ours, _eager(stored, dtype))


def test_cpu_kernel_build_failure_warns_and_falls_back_to_eager(monkeypatch):
    import torch.utils.cpp_extension

    def broken_build(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", broken_build)
    with pytest.warns(UserWarning, match="NF4 CPU kernel unavailable.*no compiler"):
        assert cpu_kernel.load.__wrapped__() is None
    monkeypatch.setenv(cpu_kernel.ENV_SWITCH, "0")
    assert cpu_kernel.load.__wrapped__() is None


def test_cpu_kernel_rounds_to_bf16_like_torch_on_ties_and_non_finite_values():
    """Code 1.0 times an absmax whose low 16 bits are exactly half a bf16 step: round half to even."""
    bits = torch.tensor([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0x00008000, 0x80018000 - 2**32], dtype=torch.int32)
    absmax = torch.cat([bits.view(torch.float32), torch.tensor([float("inf"), float("nan")])])
    stored = NF4Weight(packed=torch.full((absmax.numel() * 32,), 0xFF, dtype=torch.uint8), absmax=absmax,
                       shape=(absmax.numel(), 64))
    ours = _kernel(stored, torch.bfloat16)
    assert torch.equal(ours.view(torch.int16), _eager(stored, torch.bfloat16).view(torch.int16))
    assert torch.equal(ours[:-1, 0], absmax[:-1].to(torch.bfloat16)) and ours[-1, 0].isnan()


@pytest.mark.parametrize("shape", [(64, 64), (17, 33), (256, 1000)])
def test_int8_rows_match_bitsandbytes_vectorwise_quantization(shape):
    weight = _weight(shape, seed=6)
    q, absmax = quantize_int8(weight)
    their_q, their_absmax, _ = bnbf.int8_vectorwise_quant(weight.clone())
    assert q.dtype == torch.int8 and absmax.shape == (shape[0],)
    assert torch.equal(absmax, weight.abs().amax(dim=1))
    assert torch.equal(absmax, their_absmax)
    assert torch.equal(q, their_q)
    error = (dequantize_int8(q, absmax) - weight).abs()
    assert (error <= absmax.unsqueeze(1) / 254 * (1 + 1e-5)).all()

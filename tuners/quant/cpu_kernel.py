"""A small C++ NF4 dequantization kernel for CPU, built on first use with the system compiler.

Why: eager torch unpacks 4-bit codes with ``index_select``, a scalar gather that dominated our
QLoRA step on CPU (bitsandbytes dequantizes with a C kernel). This kernel does the whole
dequantization in one pass per 64-block: decode the double-quantized absmax (``map[q] · scale +
offset``), look the 16 NF4 codes up (AVX-512: one in-register permute for 16 values), multiply by
the absmax in fp32 and round to bf16 (round to nearest even; NaN as 0xFFFF, as torch's vectorized
cast writes it) or store fp32. The
results are bit-identical to :func:`tuners.quant.nf4.dequantize_nf4_tensors` (tested).

The build (~25 s, once per machine: cached by torch under ``TORCH_EXTENSIONS_DIR``) happens
lazily on the first CPU dequantization. The extension's name carries a hash of the source and
of the CPU's instruction-set flags, so a cache shared between different CPUs never loads a
binary built with ``-march=native`` for another one. If there is no compiler or the build fails,
:func:`load` returns ``None`` once (with a warning) and callers use the eager path.
``TUNERS_NF4_CPU_KERNEL=0`` turns the kernel off.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch

ENV_SWITCH = "TUNERS_NF4_CPU_KERNEL"

_SOURCE = r"""
#include <torch/extension.h>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static inline uint16_t to_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFFFu;  // NaN: what torch's vectorized cast writes
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

#if defined(__AVX512F__)
static inline __m256i to_bf16_x16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb)), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0xFFFF));
  return _mm512_cvtepi32_epi16(r);
}
#endif

// packed: uint8 codes (two per byte, even element high); absmax: fp32 per block, or uint8 indices into
// amap with ascale (fp32 per absmax_blocksize blocks) and aoffset (fp32 scalar) when double quantized.
torch::Tensor dequantize_nf4(torch::Tensor packed, torch::Tensor absmax, torch::Tensor codes,
                             c10::optional<torch::Tensor> amap, c10::optional<torch::Tensor> ascale,
                             c10::optional<torch::Tensor> aoffset, int64_t absmax_blocksize,
                             int64_t blocksize, bool bf16) {
  const int64_t nbytes = packed.numel();
  auto out = torch::empty({nbytes * 2}, torch::dtype(bf16 ? torch::kBFloat16 : torch::kFloat32));
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const float* c = codes.data_ptr<float>();
  const bool dq = amap.has_value();
  const float* a = dq ? nullptr : absmax.data_ptr<float>();
  const uint8_t* qa = dq ? absmax.data_ptr<uint8_t>() : nullptr;
  const float* m = dq ? amap->data_ptr<float>() : nullptr;
  const float* sc = dq ? ascale->data_ptr<float>() : nullptr;
  const float off = dq ? aoffset->data_ptr<float>()[0] : 0.0f;
  uint16_t* ob = bf16 ? reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()) : nullptr;
  float* of = bf16 ? nullptr : out.data_ptr<float>();
  const int64_t bytes_per_block = blocksize / 2;
  at::parallel_for(0, absmax.numel(), 256, [&](int64_t b0, int64_t b1) {
#if defined(__AVX512F__)
    const __m512 table = _mm512_loadu_ps(c);
    const __m512i first_half = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second_half = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
#endif
    for (int64_t b = b0; b < b1; ++b) {
      float s;
      if (dq) {
        s = m[qa[b]] * sc[b / absmax_blocksize];
        s = s + off;
      } else {
        s = a[b];
      }
      int64_t j = b * bytes_per_block;
      const int64_t end = std::min(j + bytes_per_block, nbytes);
#if defined(__AVX512F__)
      const __m512 vs = _mm512_set1_ps(s);
      for (; j + 16 <= end; j += 16) {
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j)));
        const __m512i hi = _mm512_srli_epi32(bytes, 4);
        const __m512i lo = _mm512_and_si512(bytes, _mm512_set1_epi32(15));
        const __m512 v1 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_permutex2var_epi32(hi, first_half, lo), table), vs);
        const __m512 v2 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_permutex2var_epi32(hi, second_half, lo), table), vs);
        if (bf16) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(ob + 2 * j), to_bf16_x16(v1));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(ob + 2 * j + 16), to_bf16_x16(v2));
        } else {
          _mm512_storeu_ps(of + 2 * j, v1);
          _mm512_storeu_ps(of + 2 * j + 16, v2);
        }
      }
#endif
      for (; j < end; ++j) {
        const float hi = c[p[j] >> 4] * s, lo = c[p[j] & 15] * s;
        if (bf16) {
          ob[2 * j] = to_bf16(hi);
          ob[2 * j + 1] = to_bf16(lo);
        } else {
          of[2 * j] = hi;
          of[2 * j + 1] = lo;
        }
      }
    }
  });
  return out;
}
"""

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off"]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip-installed one sits next to the interpreter of an
    unactivated virtual environment, so add that folder when no other ninja is found."""
    if shutil.which("ninja") is None and (Path(sys.executable).parent / "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@functools.cache
def load() -> ModuleType | None:
    """The built extension, or ``None`` when it is switched off or cannot be built (warns once)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    digest = hashlib.sha256((_SOURCE + " ".join(_FLAGS) + _cpu_flags() + torch.__version__).encode()).hexdigest()
    _put_ninja_on_path()
    try:
        from torch.utils.cpp_extension import load_inline

        return load_inline(
            f"tuners_nf4_cpu_{digest[:16]}", cpp_sources=[_SOURCE], functions=["dequantize_nf4"],
            extra_cflags=_FLAGS, verbose=False,
        )
    except Exception as error:  # no compiler, no headers, a failed build: the eager path still works
        warnings.warn(f"NF4 CPU kernel unavailable, using eager dequantization: {error}", stacklevel=2)
        return None

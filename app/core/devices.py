"""Which device a run trains on and whether it can train in bf16 there.

bf16 pays where the hardware multiplies in it: CUDA devices that support it, and CPUs with
AVX512-BF16 or AMX (this project's CI machine multiplies 3.8x faster in bf16 than in fp32). Elsewhere
bf16 autocast is emulated and slower than fp32, so ``bf16: auto`` leaves it off.
"""

from __future__ import annotations

from pathlib import Path

import torch

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_supported(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(CPU_BF16_FLAGS & (cpu_flags() if flags is None else flags))
    return False


def trains_in_bf16(setting: bool | str, device: torch.device) -> bool:
    """Whether a run with ``training.bf16`` = ``setting`` (true, false or "auto") trains in bf16 on
    ``device``: the engine's rule (which also refuses ``true`` where this is False) and the memory
    estimate's, since a bf16 run stores its frozen base in bf16."""
    return setting in (True, "auto") and bf16_supported(device)


def bf16_reason(device: torch.device) -> str:
    """Why bf16 is unavailable, for the message that refuses ``bf16: true``."""
    if device.type == "cpu":
        return "this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated and slower than fp32"
    return f"the {device.type} device does not support bfloat16"


def pick_device(setting: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)

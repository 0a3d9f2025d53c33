"""bf16 is used where the hardware multiplies in it, read from the CPU's flags."""

from __future__ import annotations

import torch

from app.core.devices import bf16_supported, cpu_flags


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert cpu_flags(info) == frozenset({"fpu", "sse", "avx512f", "avx512_bf16"})
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_a_cpu_with_avx512_bf16_or_amx_trains_in_bf16_and_others_do_not():
    cpu = torch.device("cpu")
    assert bf16_supported(cpu, frozenset({"avx512f", "avx512_bf16"}))
    assert bf16_supported(cpu, frozenset({"amx_bf16", "amx_tile"}))
    assert not bf16_supported(cpu, frozenset({"avx2", "avx512f"}))


def test_this_machine_is_read_as_it_is():
    flags = cpu_flags()
    assert bf16_supported(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)

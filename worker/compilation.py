"""Compiling the model's decoder blocks with ``torch.compile``, where it pays, and falling back when it fails.

What is compiled is each repeated block (a transformers ``GradientCheckpointingLayer``: a decoder
layer, an encoder layer), not the whole model: the blocks are where the time goes, they are all the
same code, so one compiled graph serves every layer (torch inlines the modules' parameters as
inputs rather than guarding on each layer), and what sits around them (embedding, output head, the
engine's chunked loss, a method's hooks outside the blocks) stays eager, where graph breaks cost
nothing. An adapter inside a block (LoRA on its linears) is compiled with it: blocks are compiled
after the method is attached.

Shapes: a compiled graph is specialised to its input sizes, so every new length would recompile.
The engine pads each batch's rows to a multiple of :data:`LENGTH_BUCKET` tokens (``worker.packing.bucketed``,
capped at the run's row width), which leaves a handful of lengths per run; the row count of a packed
micro-batch varies too. torch's automatic dynamic shapes handle both: the first change of shape
recompiles the blocks with symbolic sizes, and nothing recompiles after that.

Compilation is lazy, so whether it works is only known by running it: :func:`compile_blocks` runs
a trial (the engine's forward and backward on a real batch) and, if compiling raises (no C++
compiler for inductor on a CPU, an op it does not support, a method whose layers break the graph,
which ``fullgraph=True`` turns into an error), puts the blocks back to eager and says why in one line.

When it pays (``training.compile: auto``): on CUDA, always. On a CPU it did not on the measured
machine (docs/runs.md "Engine speed": SmolLM2-135M, LoRA r16 on all linear layers, 8 x 256 tokens,
fp32 on 2 AVX2 cores), so ``auto`` leaves a CPU run eager and ``true`` compiles anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Rows are padded to a multiple of this many tokens when the blocks are compiled (a GPU's kernels also
# like sizes that are multiples of 64).
LENGTH_BUCKET = 64
# The backend torch.compile uses; a module-level name so a test can give it one that fails.
BACKEND: Any = "inductor"


def compile_wanted(setting: bool | str, device: torch.device) -> tuple[bool, str]:
    """``training.compile`` (true, false or "auto") on ``device``: whether to compile, and why (for the log)."""
    if setting is False:
        return False, "training.compile is false"
    if setting is True:
        return True, "training.compile is true"
    if device.type == "cuda":
        return True, "training.compile is auto and the device is CUDA"
    return False, (f"training.compile is auto, which compiles on CUDA only (on a CPU compiling did not pay on "
                   f"the measured machine: docs/runs.md \"Engine speed\"); this run is on {device.type}")


def backend_name() -> str:
    """The backend blocks are compiled with, as the log names it."""
    return BACKEND if isinstance(BACKEND, str) else getattr(BACKEND, "__name__", repr(BACKEND))


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks, outermost first: transformers marks them as ``GradientCheckpointingLayer``
    (decoder and encoder layers); a block inside another is compiled with it."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks: list[nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if isinstance(module, GradientCheckpointingLayer):
            blocks.append(module)
            inside.update(id(m) for m in module.modules())
    return blocks


def compile_blocks(model: nn.Module, trial: Callable[[], None]) -> tuple[int, str | None]:
    """Compile ``model``'s blocks in place and run ``trial`` (a forward and backward as training does them)
    to compile them now. Returns (blocks compiled, None), or (0, why) with every block eager again when
    there are none or compiling failed."""
    blocks = decoder_blocks(model)
    if not blocks:
        return 0, f"{type(model).__name__} has no repeated blocks that transformers marks as layers"
    # The first block's input (a frozen embedding's output) would not require grad where every later
    # block's does (an adapter inside the block before it): two training graphs to compile instead of one.
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    hook = embeddings.register_forward_hook(_grad_like_later_blocks) if embeddings is not None else None
    for block in blocks:
        block.compile(backend=BACKEND, fullgraph=True)
    try:
        trial()
    except Exception as error:  # any failure to compile: the run trains eager instead
        uncompile(blocks)
        if hook is not None:
            hook.remove()
        return 0, _first_line(error)
    return len(blocks), None


def uncompile(blocks: list[nn.Module]) -> None:
    """Put compiled blocks back to their eager forward."""
    for block in blocks:
        block._compiled_call_impl = None


def _grad_like_later_blocks(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    """The embeddings' output requires grad exactly when grad is on (what every later block's input
    does), so the first block shares the other blocks' graphs, in training and in eval."""
    if output.is_leaf:
        output.requires_grad_(torch.is_grad_enabled())


def is_compiled(model: nn.Module) -> bool:
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def _first_line(error: BaseException) -> str:
    """The error in one line: the root cause's type and the first line of its message (torch wraps what
    its compiler raised in its own errors)."""
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300] if lines else 'no message'}"

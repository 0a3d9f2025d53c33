"""Attention over packed rows, one example at a time: no work on the blocks that the mask throws away.

A packed row (worker.packing) holds several examples; with transformers' sdpa the model builds a
block-diagonal causal mask and PyTorch's attention kernel computes the whole row × row score matrix,
then masks most of it: for chat turns of ~50 tokens in rows of 256, five sixths of the attention
work (a fifth of a CPU step on SmolLM2) is thrown away. Flash attention's variable-length kernel
skips it, but it is CUDA-only and an optional package. Here each example of a row is attended to
by itself with ``is_causal`` (the same kernel, no mask), the boundaries read from the batch's
``cu_seq_lens_q`` (the cumulative example lengths over the flattened rows, the name and meaning
flash attention's variable-length path takes, which transformers passes from the model's forward
to every attention call).

Registered once with transformers' attention interface under :data:`NAME`; its mask function is
sdpa's, so a batch without boundaries (padded batches, generation) and a compiled graph (a
data-dependent loop cannot be traced) get sdpa exactly as before.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from app.core.models import sliding_window

NAME = "tunestudio_packed_sdpa"
# The model inputs that carry a packed batch's example boundaries (flash attention's names).
BOUNDARY_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
# Examples are attended to in groups of about equal length, padded to a multiple of this many tokens.
GROUP_WIDTH_STEP = 32


def boundaries(positions: torch.Tensor) -> dict[str, Any]:
    """The boundary inputs of packed rows from their ``position_ids`` (restarting at 0 at each example):
    cumulative example lengths over the rows laid end to end. A row's padded tail continues its last
    example, as its positions do."""
    flat = positions.reshape(-1)
    starts = torch.nonzero(flat == 0).flatten().tolist()
    edges = [*starts, flat.numel()]
    cu = torch.tensor(edges, dtype=torch.int32)
    longest = max(b - a for a, b in zip(edges, edges[1:], strict=False))
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def packed_sdpa_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa, per example where the batch names its examples' boundaries."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    for unused in BOUNDARY_KEYS[1:]:
        kwargs.pop(unused, None)
    if cu is None or torch.compiler.is_compiling() or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, length = query.shape[0], query.shape[2]
    tokens = [t.transpose(1, 2).reshape(batch * length, t.shape[1], t.shape[-1]) for t in (query, key, value)]
    # A zero row for the positions that pad a group's examples to its width.
    tokens = [torch.cat([t, t.new_zeros(1, *t.shape[1:])]) for t in tokens]
    outputs, places = [], []
    # PyTorch's CPU flash kernel costs the same per position on short examples as on whole rows; its math
    # kernel, on a batch of short examples, less than half (bench figures in docs/runs.md).
    on_cpu = query.device.type == "cpu"
    for index in example_groups(cu.tolist(), pad=batch * length):
        rows, width = index.shape
        gathered = [t.index_select(0, index.flatten()).view(rows, width, *t.shape[1:]).transpose(1, 2) for t in tokens]
        with sdpa_kernel(SDPBackend.MATH) if on_cpu else contextlib.nullcontext():
            out, _ = sdpa_attention_forward(module, *gathered, None, dropout=dropout, scaling=scaling, is_causal=True,
                                            **kwargs)
        real = torch.nonzero(index.flatten() < batch * length).flatten()
        outputs.append(out.reshape(rows * width, *out.shape[2:]).index_select(0, real))
        places.append(index.flatten()[real])
    out = outputs[0].new_zeros(batch * length, *outputs[0].shape[1:])
    out = out.index_copy(0, torch.cat(places), torch.cat(outputs))
    return out.reshape(batch, length, *out.shape[1:]), None


def example_groups(edges: list[int], pad: int, width_step: int = GROUP_WIDTH_STEP) -> list[torch.Tensor]:
    """Token indices of the examples between ``edges``, grouped by length rounded up to ``width_step``: one
    ``[examples, width]`` tensor per group, each example's row right-padded with ``pad`` (a causal example
    never attends to the positions after its own)."""
    groups: dict[int, list[list[int]]] = {}
    for start, end in zip(edges, edges[1:], strict=False):
        width = -(-(end - start) // width_step) * width_step
        groups.setdefault(width, []).append([*range(start, end), *[pad] * (width - (end - start))])
    return [torch.tensor(rows) for _, rows in sorted(groups.items())]


def use_packed_attention(model: nn.Module) -> str | None:
    """Switch ``model`` (a transformers model on sdpa) to :func:`packed_sdpa_forward`; why not, or None."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current != "sdpa":
        return f"the model's attention is {current!r}, not sdpa"
    window = sliding_window(config)
    if window:
        return f"its attention has a sliding window ({window} tokens), which sdpa's mask applies"
    AttentionInterface.register(NAME, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, AttributeError, TypeError) as error:
        return f"its attention cannot be switched ({type(error).__name__}: {error})"
    if config._attn_implementation != NAME:
        return "its attention cannot be switched at run time"
    return None


def use_sdpa(model: nn.Module) -> None:
    """Back to transformers' own sdpa (the model leaves the engine, or packing turned out not to hold)."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == NAME:
        model.set_attn_implementation("sdpa")

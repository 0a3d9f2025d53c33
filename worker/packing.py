"""Padding-free causal-LM batches: a micro-batch's examples end to end in a few rows, each attending to itself.

A padded batch of chat turns is mostly padding (the chatterbot demo: half its positions), and every
padded position costs a full forward and backward through every layer. Here the examples of a
micro-batch are laid end to end in ``rows`` rows of about equal length (no longer than the run's
``max_length`` unless one example is), with ``position_ids`` that restart at 0 at each example and
no attention mask, and the examples' boundaries as flash attention's variable-length inputs
(``cu_seq_lens_q``...). worker.attention attends to each example alone from those; other attention
implementations read the restarts (``masking_utils.find_packed_sequence_indices``) and build a
block-diagonal causal mask (sdpa, eager, flex) or use variable-length attention (flash). Either way no
example attends to another and each sees the positions it would see alone. Each example's first token gets no label: nothing predicts it across the
boundary (in a padded batch it is never a target either). The same examples thus give the same
loss and gradients as a padded batch, on real tokens only; the rows' short tail (to the longest
row) is the only padding left. Example order in the rows does not change a summed loss.

Whether a model honours this is checked once, on the model itself (:func:`packing_breaks`): its
output for two examples packed must equal its output for each alone. Methods that rewrite the
model's inputs (soft prompts, prefixes) cannot share virtual tokens between packed examples; the
engine pads for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from app.data.prepare import IGNORE
from worker.attention import boundaries

# Key of a packed batch's count of real tokens (every example token, no padding); not a model input.
REAL_TOKENS = "real_tokens"
# Tokens per example in the packing check; short, so the check costs a few milliseconds.
PROBE_TOKENS = 12


def segment_lengths(example: dict[str, Any]) -> list[int]:
    """The examples inside one prepared example: itself, or the examples of a ``data.packing`` block
    (whose ``position_ids`` restart at each of them)."""
    positions = example.get("position_ids")
    if positions is None:
        return [len(example["input_ids"])]
    starts = [i for i, p in enumerate(positions) if p == 0] or [0]
    return [b - a for a, b in zip(starts, [*starts[1:], len(positions)], strict=True)]


def assign_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of ``lengths`` per row: as few rows as hold them within ``width`` tokens each (a longer
    example gets a row to itself), balanced longest first so the rows end close together."""
    if not lengths:
        return []
    width = max(width, max(lengths))
    rows = max(1, math.ceil(sum(lengths) / width))
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    while True:
        members: list[list[int]] = [[] for _ in range(rows)]
        totals = [0] * rows
        for i in order:
            row = min(range(rows), key=lambda r: (totals[r], r))
            members[row].append(i)
            totals[row] += lengths[i]
        if max(totals) <= width:
            return [sorted(m) for m in members if m]
        rows += 1


def bucketed(length: int, limit: int, bucket: int) -> int:
    """``length`` rounded up to a multiple of ``bucket``, but not past ``limit`` (the run's row width) unless
    ``length`` itself is longer: the few row lengths a compiled model sees (worker.compilation)."""
    return max(length, min(math.ceil(length / bucket) * bucket, limit))


def pack_batch(examples: Sequence[dict[str, Any]], pad_id: int, width: int, bucket: int = 1) -> dict[str, Any]:
    """``input_ids``, ``position_ids`` and ``labels`` rows (see the module docstring) and the count of real
    tokens under :data:`REAL_TOKENS`. Rows shorter than the longest (rounded up to a multiple of
    ``bucket``, within ``width``: :func:`bucketed`) end in ``pad_id`` tokens whose positions continue the
    row's last example: a causal model's earlier tokens never see them, and they carry no label."""
    rows = assign_rows([len(e["input_ids"]) for e in examples], width)
    ids: list[list[int]] = []
    positions: list[list[int]] = []
    labels: list[list[int]] = []
    for members in rows:
        row_ids: list[int] = []
        row_pos: list[int] = []
        row_labels: list[int] = []
        for i in members:
            example = examples[i]
            row_ids += list(example["input_ids"])
            example_labels = list(example["labels"])
            start = 0
            for length in segment_lengths(example):
                row_pos += range(length)
                example_labels[start] = IGNORE  # predicted by nothing: the previous token is another example's
                start += length
            row_labels += example_labels
        ids.append(row_ids)
        positions.append(row_pos)
        labels.append(row_labels)
    longest = bucketed(max(len(r) for r in ids), width, bucket)
    for row_ids, row_pos, row_labels in zip(ids, positions, labels, strict=True):
        tail = longest - len(row_ids)
        row_pos += range(row_pos[-1] + 1, row_pos[-1] + 1 + tail)
        row_ids += [pad_id] * tail
        row_labels += [IGNORE] * tail
    position_ids = torch.tensor(positions)
    return {"input_ids": torch.tensor(ids), "position_ids": position_ids, "labels": torch.tensor(labels),
            **boundaries(position_ids), REAL_TOKENS: sum(len(e["input_ids"]) for e in examples)}


def real_tokens(batch: dict[str, Any]) -> int:
    """The example tokens a batch holds, padding left out (what the run's tokens/s counts)."""
    if REAL_TOKENS in batch:
        return int(batch[REAL_TOKENS])
    return int(batch["attention_mask"].sum())


def packing_breaks(model: nn.Module, first: Sequence[int], second: Sequence[int]) -> str | None:
    """Why ``model`` cannot train on packed rows, or None when it can: two examples packed in one row
    (position ids restarting, no attention mask) must give each one's output alone. Run on the fp32
    base before any adapter, so a mismatch is the model's and not rounding."""
    a = torch.tensor([list(first[:PROBE_TOKENS])])
    b = torch.tensor([list(second[:PROBE_TOKENS])])
    packed_ids = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])]).unsqueeze(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = torch.cat([model(input_ids=x.to(device), use_cache=False).logits for x in (a, b)], dim=1)
            packed = model(input_ids=packed_ids.to(device), position_ids=positions.to(device),
                           use_cache=False, **boundaries(positions)).logits
    except (TypeError, ValueError, RuntimeError) as error:
        return f"its forward refuses position ids without an attention mask ({type(error).__name__}: {error})"
    finally:
        model.train(was_training)
    scale = float(alone.abs().max()) or 1.0
    error = float((packed - alone).abs().max()) / scale
    if error > 1e-4:  # fp32 differences of a packing model are ~1e-7
        return (f"packed examples change its outputs (relative difference {error:.2g}): its attention does not "
                "read position ids as sequence boundaries")
    return None

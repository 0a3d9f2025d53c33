"""Causal-LM cross-entropy that never holds the full logits in fp32.

A 49k-word vocabulary makes the logits of a batch of 8 x 256 tokens 400 MB in fp32, more than the
rest of a small model's activations, and most of those rows (prompt and padding positions) carry no
target. The loss here takes the model's last hidden states, keeps only the positions that have a
target, and projects them through the output head a chunk of rows at a time under activation
checkpointing: each chunk's logits live only while its loss (and, in backward, its gradient) is
computed. The sum and the target count come back apart, so the caller normalises by the target
tokens of a whole optimizer step (gradient accumulation), as evaluation does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
DEFAULT_CHUNK_ROWS = 1024


def shifted_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states that predict a target and those targets: position t predicts token t + 1.

    Extra leading positions in ``hidden`` (virtual tokens of prompt tuning) have no target.
    """
    extra = hidden.shape[1] - labels.shape[1]
    if extra < 0:
        raise ValueError(f"hidden states ({hidden.shape[1]} positions) are shorter than labels ({labels.shape[1]})")
    if extra:
        labels = F.pad(labels, (extra, 0), value=IGNORE_INDEX)
    targets = labels[:, 1:].reshape(-1)
    rows = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    keep = targets != IGNORE_INDEX
    return rows[keep], targets[keep]


def _chunk_loss(rows: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
    return F.cross_entropy(head(rows).float(), targets, reduction="sum")


def chunked_lm_loss(
    hidden: torch.Tensor, labels: torch.Tensor, head: nn.Module, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[torch.Tensor, int]:
    """(sum of token losses, number of target tokens); gradients equal those of the plain loss."""
    rows, targets = shifted_targets(hidden, labels)
    count = int(targets.numel())
    if count == 0:
        return hidden.sum() * 0.0, 0
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk_rows):
        piece = slice(start, start + chunk_rows)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, rows[piece], targets[piece], head, use_reentrant=False)
        else:
            total = total + _chunk_loss(rows[piece], targets[piece], head)
    return total, count

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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from app.core.options import LOSS_CHUNK_ROWS

IGNORE_INDEX = -100
DEFAULT_CHUNK_ROWS = LOSS_CHUNK_ROWS


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


@contextmanager
def head_detached(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, ``model``'s forward returns its last hidden states where its logits were (the output head is
    an identity); yields the real head (adapter-wrapped, if an adapter targets it) for
    :func:`chunked_lm_loss`. The head is back in place on leaving, also after an error."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(nn.Identity())
    try:
        yield head
    finally:
        model.set_output_embeddings(head)


def hidden_loss_breaks(model: nn.Module, ids: Sequence[int]) -> str | None:
    """Why the loss cannot be computed from ``model``'s hidden states, or None when it can: its logits must
    be exactly its output head applied to what its forward returns with the head detached. Models that
    scale or soft-cap their logits after the head (Gemma 2's final_logit_softcapping, Cohere's
    logit_scale, Granite's logits_scaling), or that do not call their head as a module, fail the check.
    Run on the fp32 base, so a mismatch is the model's and not rounding."""
    if model.get_output_embeddings() is None:
        return "the model has no output head to detach"
    inputs = torch.tensor([list(ids)], device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=inputs, use_cache=False).logits
            with head_detached(model) as head:
                hidden = model(input_ids=inputs, use_cache=False).logits
            rebuilt = head(hidden)
    except RuntimeError:  # what came back was not hidden states: the head was not called as a module
        rebuilt = None
    finally:
        model.train(was_training)
    if rebuilt is None or rebuilt.shape != logits.shape:
        return "its forward does not call its output head as a module"
    # The same fp32 ops on the same values: equal but for a soft-cap or scale (tiny on small logits).
    scale = float(logits.abs().max()) or 1.0
    if float((rebuilt - logits).abs().max()) / scale > 1e-6:
        return "it transforms its logits after the output head (soft-capping or scaling)"
    return None

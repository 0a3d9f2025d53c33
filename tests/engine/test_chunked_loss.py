"""The chunked loss equals the plain cross-entropy, value and gradients, and keeps no full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worker.loss import IGNORE_INDEX, chunked_lm_loss


def _batch(seed: int = 0, batch: int = 3, length: int = 17, hidden: int = 24, vocab: int = 101):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, hidden, generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[0, :5] = IGNORE_INDEX  # a prompt
    labels[2, 11:] = IGNORE_INDEX  # padding
    head = nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=g) * 0.2)
    return states, labels, head


def _plain(states, labels, head):
    logits = head(states).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("chunk_rows", [1, 7, 1024])
def test_chunked_loss_and_gradients_equal_the_plain_loss(chunk_rows):
    states, labels, head = _batch()
    expected = _plain(states, labels, head)
    expected.backward()
    want_states, want_head = states.grad.clone(), head.weight.grad.clone()
    states.grad, head.weight.grad = None, None

    got, count = chunked_lm_loss(states, labels, head, chunk_rows=chunk_rows)
    got.backward()
    assert count == int((labels[:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states.grad, want_states, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, want_head, rtol=1e-5, atol=1e-6)


def test_virtual_tokens_before_the_text_are_no_targets():
    states, labels, head = _batch(seed=1)
    virtual = torch.randn(states.shape[0], 4, states.shape[-1])
    with_prompt = torch.cat([virtual, states.detach()], dim=1)
    got, count = chunked_lm_loss(with_prompt, labels, head)
    padded = F.pad(labels, (4, 0), value=IGNORE_INDEX)
    torch.testing.assert_close(got, _plain(with_prompt, padded, head))
    # as in peft: the last virtual token predicts the first real one
    assert count == int((labels[:, 1:] != IGNORE_INDEX).sum()) + int((labels[:, 0] != IGNORE_INDEX).sum())


def test_a_chunk_holds_only_its_rows_of_logits():
    """Under checkpointing, backward keeps no chunk's logits: saved tensors are inputs, never [rows, vocab]."""
    states, labels, head = _batch(batch=4, length=64, vocab=5000)
    saved: list[tuple[int, ...]] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        loss, _ = chunked_lm_loss(states, labels, head, chunk_rows=32)
    assert not any(len(shape) == 2 and shape[-1] == 5000 and shape[0] > 0 for shape in saved), saved
    loss.backward()
    assert states.grad is not None and torch.isfinite(states.grad).all()

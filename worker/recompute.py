"""Gradient checkpointing: a block's activations recomputed in backward instead of kept, for memory.

A training step keeps every block's intermediate activations for the backward pass; at long lengths
or large batches those dominate memory. With ``training.gradient_checkpointing`` each block keeps
only its input and runs its forward again in backward (about a third more compute). It is
transformers' own switch (``activation_checkpointing_enable``, the name ``gradient_checkpointing_enable``
has in transformers 5), non-reentrant (``use_reentrant=False``): that checkpoint needs no input that
requires grad, so it works on a frozen base whose only trained tensors are an adapter's inside the
blocks, and it replays dropout with the same random numbers, so the loss and gradients are the same
as without it.
"""

from __future__ import annotations

from torch import nn


def enable_gradient_checkpointing(model: nn.Module) -> str | None:
    """Turn it on for ``model`` (the base transformers model, adapters attached or not); None when it is
    on, else why it cannot be."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is None or not getattr(model, "supports_gradient_checkpointing", False):
        return f"{type(model).__name__} does not support gradient checkpointing"
    try:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    except ValueError as error:
        return str(error)
    return None

"""A learnable synthetic task for any tuned tiny model: memorise two fixed sequences (or their labels)."""

from __future__ import annotations

import torch

from tests.support.tiny_models import batch

TEXTS = ("the cat sat on the mat", "one two three four five six")


def task_inputs(family: str, task: str) -> dict[str, torch.Tensor]:
    inputs = batch(family, TEXTS)
    if task == "CAUSAL_LM":
        labels = inputs["input_ids"].clone()
        labels[inputs["attention_mask"] == 0] = -100
        inputs["labels"] = labels
    elif task == "SEQ_CLS":
        inputs["labels"] = torch.tensor([0, 2])
    elif task == "SEQ_2_SEQ_LM":
        inputs["labels"] = inputs["input_ids"][:, :5].clone()
    return inputs


def adam_losses(tuned: torch.nn.Module, inputs: dict, steps: int = 25, lr: float = 1e-2,
                head_lr: float | None = None) -> list[float]:
    """Loss per step of Adam on the trainable parameters, always on the same batch, in the caller's mode;
    with ``head_lr``, the copied heads learn at that rate, as the engine gives them their own."""
    params = [p for p in tuned.parameters() if p.requires_grad]
    assert params, "nothing is trainable"
    heads = {id(p) for p in tuned.head_parameters()} if head_lr is not None else set()
    groups = [{"params": [p for p in params if id(p) not in heads]},
              {"params": [p for p in params if id(p) in heads], "lr": head_lr}]
    opt = torch.optim.Adam([g for g in groups if g["params"]], lr=lr)
    losses = []
    for _ in range(steps):
        loss = tuned(**inputs).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_losses(tuned: torch.nn.Module, family: str, task: str, steps: int = 25, lr: float = 1e-2,
                 head_lr: float | None = None) -> list[float]:
    """Loss per step of Adam on the task's synthetic batch."""
    tuned.train()
    losses = adam_losses(tuned, task_inputs(family, task), steps, lr, head_lr)
    tuned.eval()
    return losses


def model_inputs(family: str, task: str) -> dict[str, torch.Tensor]:
    inputs = batch(family)
    if task == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :4]
    return inputs


def perturb(tuned: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    """Move every trainable parameter off its init so a silently dropped key changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)

"""Shared checks for the reparameterized methods (AdaLoRA, LoHa, LoKr) against peft, the test oracle."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import batch, tiny_model

TEXTS = ("the cat sat on the mat", "one two three four five six")


def inputs_for(family: str, task: str = "CAUSAL_LM", with_labels: bool = False) -> dict[str, torch.Tensor]:
    inputs = batch(family, TEXTS)
    if with_labels:
        if task == "CAUSAL_LM":
            labels = inputs["input_ids"].clone()
            labels[inputs["attention_mask"] == 0] = -100
        else:
            labels = torch.tensor([0, 2])
        inputs["labels"] = labels
    return inputs


def perturb(model: torch.nn.Module, scale: float = 0.1, seed: int = 1) -> None:
    """Move every trainable tensor off its init, so a key that is silently dropped changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def peft_model_from(path: Path, family: str, task: str):
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(tiny_model(family, task), str(path))


def assert_ours_loads_in_peft(tuned, family: str, task: str, path: Path) -> None:
    """Same key set and shapes as peft writes for that config, and the same outputs (1e-5, fp32)."""
    from peft.utils import get_peft_model_state_dict

    tuned.save_pretrained(path)
    ours_file = load_file(str(path / "adapter_model.safetensors"))
    theirs = peft_model_from(path, family, task)
    expected = get_peft_model_state_dict(theirs)
    assert set(ours_file) == set(expected), (sorted(set(ours_file) ^ set(expected)))[:6]
    for key, value in ours_file.items():
        assert value.shape == expected[key].shape, key
    inputs = inputs_for(family, task)
    torch.testing.assert_close(logits(theirs, inputs), logits(tuned, inputs), rtol=1e-5, atol=1e-5)


def assert_peft_loads_in_ours(peft_config, family: str, task: str, path: Path) -> None:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_peft_model(tiny_model(family, task), peft_config)
    perturb(theirs)
    theirs.save_pretrained(str(path))
    ours = tuners.load(tiny_model(family, task), path)
    inputs = inputs_for(family, task)
    torch.testing.assert_close(logits(ours, inputs), logits(theirs, inputs), rtol=1e-5, atol=1e-5)


def peft_trainable_count(peft_config, family: str, task: str) -> tuple[int, int]:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model(tiny_model(family, task), peft_config).get_nb_trainable_parameters()


def assert_merge_matches_unmerged(tuned, family: str, task: str = "CAUSAL_LM") -> None:
    inputs = inputs_for(family, task)
    perturb(tuned)
    before = logits(tuned, inputs)
    with tuned.disabled():
        base = logits(tuned, inputs)
    assert (before - base).abs().max() > 1e-3, "the perturbed adapter should change the output"
    tuned.merge()
    torch.testing.assert_close(logits(tuned, inputs), before, rtol=1e-5, atol=1e-5)
    tuned.unmerge()
    with tuned.disabled():
        torch.testing.assert_close(logits(tuned, inputs), base, rtol=1e-5, atol=1e-5)
    plain = tuned.merge_and_unload()
    torch.testing.assert_close(logits(plain, inputs), before, rtol=1e-5, atol=1e-5)


def train(tuned, family: str, task: str = "CAUSAL_LM", steps: int = 30, lr: float = 1e-2) -> list[float]:
    """Adam on the trainable parameters with the method's hooks as a training loop calls them; returns
    the task loss (without the method's regulariser) at every step."""
    inputs = inputs_for(family, task, with_labels=True)
    method, name = tuned.method, tuned.active_adapter
    opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=lr)
    tuned.train()
    losses = []
    for step in range(steps):
        loss = tuned(**inputs).loss
        losses.append(loss.item())
        if method.loss_term is not None:
            loss = loss + method.loss_term(tuned, name)
        loss.backward()
        opt.step()
        if method.after_backward is not None:
            method.after_backward(tuned, name, step)
        opt.zero_grad()
    tuned.eval()
    return losses


def eval_loss(tuned, family: str, task: str = "CAUSAL_LM") -> float:
    tuned.eval()
    with torch.no_grad():
        return tuned(**inputs_for(family, task, with_labels=True)).loss.item()

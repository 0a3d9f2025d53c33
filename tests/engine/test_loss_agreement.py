"""The train step's loss, the eval loss and the model's own loss agree on the same examples.

The engine computes a causal LM's loss its own way: padding-free rows (worker.packing), the head applied
to the target positions a chunk at a time (worker.loss), normalised by the step's target tokens. On the
same examples that must be what a person gets from transformers itself, ``model(input_ids,
labels=labels).loss`` per example weighted by its target tokens, both through the train step (split
unevenly into micro-batches) and through eval (length-sorted, packed batches). A step-0 eval loss far
from the first train losses is then a fact about the examples, not about the arithmetic.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from app.core.spec import RunSpec
from tests.engine.helpers import COLOURS, mapping_spec, save_tiny_model
from worker.engine import MemoryReporter, TrainingRecipe


def uneven_pairs(path: Path) -> Path:
    """Prompt/completion pairs whose prompts and answers differ in length (so do the packed rows)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "completion"])
        for r in range(5):
            for thing, colour in COLOURS.items():
                writer.writerow([f"Q{r}: {'please ' * r}what colour is the {thing}? A:",
                                 f" {colour}{' indeed' * (r % 3)}"])
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("agree")
    spec = mapping_spec(save_tiny_model(root / "llama"), uneven_pairs(root / "pairs.csv"), max_steps=1, batch_size=4)
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", MemoryReporter(), root / "models")
    recipe.setup()
    assert recipe.packed and recipe.hidden_loss  # the engine's own paths, not the plain fallbacks
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that changes the outputs (LoRA's B starts at zero), on lm_head too
        for param in recipe.params:
            param.normal_(0, 0.05)
    recipe.tuned.eval()  # no dropout: every side computes the same function
    return recipe


def hf_loss(recipe, split, indices) -> float:
    """transformers' own loss per example, weighted by its target tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in indices:
            example = split[i]
            ids, labels = torch.tensor([example["input_ids"]]), torch.tensor([example["labels"]])
            n = int((labels[0, 1:] != -100).sum())
            total += float(recipe.tuned.model(input_ids=ids, labels=labels, use_cache=False).loss) * n
            count += n
    return total / count


def test_train_step_eval_and_the_model_s_own_loss_agree_on_the_same_examples(recipe):
    split = recipe.train_data
    indices = list(range(0, len(split), 6))[:7]  # the file orders pairs by length: take some of each
    lengths = split.lengths()
    assert len({lengths[i] for i in indices}) > 1  # examples of different lengths

    reference = hf_loss(recipe, split, indices)
    train = recipe.forward_backward([recipe._batch(indices[:2], split), recipe._batch(indices[2:], split)])
    recipe.optimizer.zero_grad(set_to_none=True)
    recipe.eval_data, recipe.eval_lengths = split, lengths  # eval's path over the same examples
    with torch.no_grad():
        evaluated = recipe._eval_pass(indices).loss()

    assert train == pytest.approx(reference, rel=1e-5)
    assert evaluated == pytest.approx(reference, rel=1e-5)


def test_the_step_0_eval_loss_is_the_model_s_own_loss_on_the_validation_examples(tmp_path):
    spec = mapping_spec(save_tiny_model(tmp_path / "llama"), uneven_pairs(tmp_path / "pairs.csv"), max_steps=1,
                        batch_size=4)
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "out", MemoryReporter(), tmp_path / "models")
    recipe.setup()
    result = recipe.evaluate()
    assert result.examples == len(recipe.eval_data) > 4  # several eval batches
    recipe.tuned.eval()
    assert result.loss == pytest.approx(hf_loss(recipe, recipe.eval_data, range(len(recipe.eval_data))), rel=1e-5)

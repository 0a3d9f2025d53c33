"""The training loss is normalised by the whole optimizer step's targets, across gradient accumulation.

Two micro-batches of very different lengths must give the gradient (and the reported loss) of one batch
holding all their examples, as the model itself computes its loss on it: a token mean for a causal LM,
an example mean for a classifier. Averaging each micro-batch's own mean (the old rule) weighs the few
tokens of a short batch like the many of a long one, and gives a different gradient.
"""

from __future__ import annotations

import csv

import pytest
import torch

from app.core.spec import RunSpec
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from tests.support.tiny_models import tokenizer
from worker.engine import MemoryReporter, TrainingRecipe, collate, target_count


@pytest.fixture(scope="module")
def llama_recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    spec = mapping_spec(save_tiny_model(root / "llama"), write_mapping_csv(root / "colours.csv"), max_steps=1)
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", MemoryReporter(), root / "models")
    recipe.setup()
    recipe.tuned.eval()  # no dropout: both sides of each comparison see the same function
    return recipe


@pytest.fixture(scope="module")
def bert_recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    data = root / "moods.csv"
    with open(data, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(16):
            writer.writerow([f"{'good ' * (1 + i)}day" if i % 2 else f"bad {'night ' * (1 + i)}", i % 2])
    spec = {
        "name": "moods", "model": {"name": str(save_tiny_model(root / "bert", "bert", "SEQ_CLS"))},
        "data": {"dataset": str(data), "shape": "classification", "max_length": 64, "val_fraction": 0.25},
        "method": {"peft_type": "LORA", "target_modules": "attention"},
        "training": {"max_steps": 1, "batch_size": 4, "seed": 0, "bf16": False},  # compared with fp32 references
    }
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", MemoryReporter(), root / "models")
    recipe.setup()
    recipe.tuned.eval()
    return recipe


def _example(tok, prompt: str, completion: str) -> dict[str, list[int]]:
    """A prompt/completion example as the data stage builds one: the prompt carries no loss."""
    p = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
    c = [*tok(completion, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    return {"input_ids": p + c, "attention_mask": [1] * (len(p) + len(c)), "labels": [-100] * len(p) + c}


def _grads(recipe) -> dict[str, torch.Tensor]:
    grads = {k: p.grad.detach().clone() for k, p in recipe.tuned.adapter_parameters().items() if p.grad is not None}
    recipe.tuned.zero_grad(set_to_none=True)
    return grads


def _mean_of_micro_batch_means(recipe, micro: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    for b in micro:
        (recipe.tuned(**b).loss / len(micro)).backward()
    return _grads(recipe)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-7, msg=key)


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.allclose(a[k], b[k], rtol=1e-2, atol=1e-6) for k in a)


def test_causal_lm_gradient_is_the_one_batch_token_mean_across_uneven_micro_batches(llama_recipe):
    tok = tokenizer("llama")
    short = [_example(tok, "Q: sky? A:", " blue")]
    long = [_example(tok, "Q: " + "tell me about the colour of things " * 3, " the sea is blue and " * 6),
            _example(tok, "Q: and the grass? " * 2, " the grass is green, " * 7)]
    micro = [collate(short, 0), collate(long, 0)]
    counts = [target_count(b["labels"], "CAUSAL_LM") for b in micro]
    assert counts[1] > 15 * counts[0], counts  # very different lengths: the rule matters

    loss = llama_recipe.forward_backward(micro)
    accumulated = _grads(llama_recipe)

    whole = collate(short + long, 0)
    reference = llama_recipe.tuned(**whole).loss  # transformers' own token mean over the single batch
    reference.backward()
    expected = _grads(llama_recipe)

    assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
    _assert_same(accumulated, expected)
    assert _differs(_mean_of_micro_batch_means(llama_recipe, micro), expected)


def test_classifier_gradient_is_the_one_batch_example_mean_across_uneven_micro_batches(bert_recipe):
    examples = [bert_recipe.train_data[i] for i in range(4)]
    micro = [collate(examples[:3], bert_recipe.pad_id), collate(examples[3:], bert_recipe.pad_id)]
    assert [target_count(b["labels"], "SEQ_CLS") for b in micro] == [3, 1]

    loss = bert_recipe.forward_backward(micro)
    accumulated = _grads(bert_recipe)
    reference = bert_recipe.tuned(**collate(examples, bert_recipe.pad_id)).loss
    reference.backward()
    expected = _grads(bert_recipe)

    assert loss == pytest.approx(float(reference.detach()), rel=1e-5)
    _assert_same(accumulated, expected)
    assert _differs(_mean_of_micro_batch_means(bert_recipe, micro), expected)


def test_a_causal_lm_scores_each_position_against_the_next_token():
    labels = torch.tensor([[4, -100, 7, 8, 2], [-100, 5, 2, -100, -100]])
    # position t predicts token t+1: the first label is never a target, padding never is
    assert target_count(labels, "CAUSAL_LM") == 5
    # a seq2seq decoder's logits line up with its labels; a classifier has one label per example
    assert target_count(labels, "SEQ_2_SEQ_LM") == 6 and target_count(torch.tensor([0, 1, 1]), "SEQ_CLS") == 3
    assert target_count(torch.tensor([[3, 4, -100]]), "CAUSAL_LM") == 1

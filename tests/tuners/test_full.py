"""Full fine-tuning baseline: every weight trains, the folder is the whole model, it loads back."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, perturb, train_losses
from tuners.methods.full import FullConfig


def test_every_base_parameter_is_trainable():
    tuned = tuners.apply(tiny_model("llama"), FullConfig())
    trainable, total = tuned.trainable_parameters()
    assert trainable == total == sum(p.numel() for p in tiny_model("llama").parameters())


def test_classification_head_trains_through_its_copy():
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"), FullConfig(task_type="SEQ_CLS"))
    frozen = {n for n, p in tuned.named_parameters() if not p.requires_grad}
    assert frozen == {"model.classifier.base_layer.weight", "model.classifier.base_layer.bias"}


@pytest.mark.parametrize("family,task", [("gpt2", "CAUSAL_LM"), ("t5", "SEQ_2_SEQ_LM")])
def test_saved_folder_is_the_whole_model_and_loads_back(family, task, tmp_path):
    tuned = tuners.apply(tiny_model(family, task), FullConfig(task_type=task))
    perturb(tuned, scale=0.02)
    tuned.save_pretrained(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    unique = {id(p): p for p in tiny_model(family, task).parameters()}
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in unique.values())
    loaded = tuners.load(tiny_model(family, task, seed=5), tmp_path / "a")
    inputs = model_inputs(family, task)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)


def test_target_modules_is_refused():
    with pytest.raises(tuners.ConfigError, match="^target_modules"):
        tuners.apply(tiny_model("gpt2"), FullConfig(target_modules=["c_attn"]))


@pytest.mark.parametrize("family,task", [("llama", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_training_lowers_the_loss(family, task):
    losses = train_losses(tuners.apply(tiny_model(family, task), FullConfig(task_type=task)), family, task, steps=8, lr=1e-2)
    assert losses[-1] < losses[0] - 0.3

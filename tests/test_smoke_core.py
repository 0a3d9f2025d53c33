"""The core's contract in one place: a zero-initialised adapter is the base model, on every tiny family."""

import pytest
import torch

import tuners
from tests.support.tiny_models import batch, tiny_model

FAMILIES = [("llama", "CAUSAL_LM"), ("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS"), ("t5", "SEQ_2_SEQ_LM")]


@pytest.mark.parametrize("family,task", FAMILIES)
@pytest.mark.parametrize("targets", ["attention", "all-linear"])
def test_zero_initialised_lora_gives_the_base_output(family, task, targets):
    inputs = batch(family)
    if task == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :3]
    with torch.no_grad():
        expected = tiny_model(family, task)(**inputs).logits
        tuned = tuners.apply(tiny_model(family, task), tuners.LoraConfig(r=4, target_modules=targets, task_type=task))
        got = tuned(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

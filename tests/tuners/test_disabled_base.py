"""``disabled()`` after ``tuners.load`` shows the untouched base, also for methods whose adapter
overwrites base tensors (BitFit biases, layer-freeze blocks, full weights, LoRA's bias modes):
the playground's "base" column depends on it."""

from __future__ import annotations

import pytest
import torch

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, perturb
from tuners.methods.bitfit import BitFitConfig
from tuners.methods.full import FullConfig
from tuners.methods.layer_freeze import LayerFreezeConfig
from tuners.methods.lora import LoraConfig

CASES = [
    ("gpt2", "CAUSAL_LM", lambda: BitFitConfig()),
    ("bert", "SEQ_CLS", lambda: BitFitConfig(task_type="SEQ_CLS")),
    ("llama", "CAUSAL_LM", lambda: LayerFreezeConfig(num_trainable_layers=1)),
    ("llama", "CAUSAL_LM", lambda: FullConfig()),
    ("gpt2", "CAUSAL_LM", lambda: LoraConfig(r=2, target_modules=["c_attn"], bias="all")),
]


@pytest.mark.parametrize(("family", "task", "config"), CASES, ids=["bitfit", "bitfit-seqcls", "layer-freeze",
                                                                  "full", "lora-bias-all"])
def test_disabled_gives_the_pristine_base_and_the_tuned_model_comes_back(family, task, config, tmp_path):
    tuned = tuners.apply(tiny_model(family, task), config())
    perturb(tuned)
    tuned.save_pretrained(tmp_path / "a")
    inputs = model_inputs(family, task)
    with torch.no_grad():
        base_logits = tiny_model(family, task)(**inputs).logits
        trained_logits = tuned(**inputs).logits
        loaded = tuners.load(tiny_model(family, task), tmp_path / "a")
        torch.testing.assert_close(loaded(**inputs).logits, trained_logits, rtol=0, atol=0)
        with loaded.disabled():
            torch.testing.assert_close(loaded(**inputs).logits, base_logits, rtol=0, atol=0)
            with loaded.disabled():  # nesting keeps the base
                torch.testing.assert_close(loaded(**inputs).logits, base_logits, rtol=0, atol=0)
            torch.testing.assert_close(loaded(**inputs).logits, base_logits, rtol=0, atol=0)
        torch.testing.assert_close(loaded(**inputs).logits, trained_logits, rtol=0, atol=0)
    assert not torch.allclose(base_logits, trained_logits)

"""The prefix reaches the model under whatever name its ``forward`` takes the cache.

transformers 5.24 renamed ``past_key_values`` to ``cache``; a release can only ever show one spelling, so
each model here is re-spelled to the other one too. If tuners hard-coded a name, one of the two cases
would fail with "does not accept a prefix cache" or (worse) run without the prefix.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import tuners
from tests.support.tiny_models import batch, tiny_model
from tuners.methods.prefix_tuning import CACHE_KEYWORDS, PrefixTuningConfig, cache_keyword
from tuners.methods.unipelt import UniPeltConfig

NVT = 3


def respell_cache(module: torch.nn.Module, keyword: str) -> None:
    """Make ``module.forward`` take the cache as ``keyword``, passing it on under the installed name."""
    installed = cache_keyword(module)
    assert installed is not None, f"{type(module).__name__} takes no cache on this transformers"
    cls = type(module)

    def forward(self, *args, **kwargs):
        if keyword in kwargs:
            kwargs[installed] = kwargs.pop(keyword)
        return cls.forward(self, *args, **kwargs)

    signature = inspect.signature(cls.forward)
    forward.__signature__ = signature.replace(parameters=[
        p.replace(name=keyword) if p.name == installed else p for p in signature.parameters.values()
    ])
    module.__class__ = type(cls.__name__, (cls,), {"forward": forward})


def _takes_the_cache(model: torch.nn.Module) -> torch.nn.Module:
    return model if cache_keyword(model) else getattr(model, model.base_model_prefix)


CASES = [
    ("llama", "CAUSAL_LM", PrefixTuningConfig),
    ("gpt2", "CAUSAL_LM", PrefixTuningConfig),
    ("bert", "SEQ_CLS", PrefixTuningConfig),
    ("t5", "SEQ_2_SEQ_LM", PrefixTuningConfig),
    ("llama", "CAUSAL_LM", UniPeltConfig),
    ("bert", "SEQ_CLS", UniPeltConfig),
]


@pytest.mark.parametrize("keyword", CACHE_KEYWORDS)
@pytest.mark.parametrize(("family", "task", "cfg_cls"), CASES,
                         ids=[f"{c[2].peft_type.lower()}-{c[0]}" for c in CASES])
def test_prefix_reaches_the_model_under_either_spelling(family, task, cfg_cls, keyword):
    inputs = batch(family)
    if task == "SEQ_2_SEQ_LM":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :4]

    def adapted(respelled: str | None) -> torch.Tensor:
        model = tiny_model(family, task)
        if respelled:
            respell_cache(_takes_the_cache(model), respelled)
            assert cache_keyword(_takes_the_cache(model)) == respelled
        torch.manual_seed(1)
        tuned = tuners.apply(model, cfg_cls(task_type=task, num_virtual_tokens=NVT))
        with torch.no_grad():
            for p in tuned.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.5)
            with tuned.disabled():
                base = tuned(**inputs).logits
            return tuned(**inputs).logits, base

    expected, _ = adapted(None)
    got, base = adapted(keyword)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, base, atol=1e-3), "the prefix did not reach the model"


def test_a_model_that_takes_no_cache_is_refused_by_name():
    model = tiny_model("bert", "SEQ_CLS")
    respell_cache(model.bert, "kv_store")
    tuned = tuners.apply(model, PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=NVT))
    with pytest.raises(tuners.ConfigError, match="does not accept a prefix cache"):
        tuned(**batch("bert"))

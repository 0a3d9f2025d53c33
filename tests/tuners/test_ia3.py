"""(IA)³: interop with peft 0.21.2 both ways, the formula, merging, validation and training."""

from __future__ import annotations

import peft
import pytest
import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, perturb, train_losses
from tuners.methods.ia3 import IA3Config, IA3Linear

CASES = {
    "llama-default-targets": ("llama", "CAUSAL_LM", {}),
    "llama-explicit": (
        "llama", "CAUSAL_LM",
        dict(target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], feedforward_modules=["up_proj", "down_proj"]),
    ),
    "gpt2-conv1d": ("gpt2", "CAUSAL_LM", dict(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"])),
    "bert-seqcls-default": ("bert", "SEQ_CLS", {}),
    "t5-seq2seq": ("t5", "SEQ_2_SEQ_LM", dict(target_modules=["k", "v", "wo"], feedforward_modules=["wo"])),
}


def _ours(family, task, kwargs):
    return tuners.apply(tiny_model(family, task), IA3Config(task_type=task, **kwargs))


def _peft_twin(family, task, tuned):
    """peft's IA3 on the same modules our adapter resolved (peft's own defaults differ per model)."""
    cfg = tuned.config
    return peft.get_peft_model(
        tiny_model(family, task),
        peft.IA3Config(task_type=task, target_modules=cfg.target_modules, feedforward_modules=cfg.feedforward_modules,
                       modules_to_save=cfg.modules_to_save),
    )


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_saved_by_tuners_loads_in_peft_with_equal_outputs(case, tmp_path):
    family, task, kwargs = CASES[case]
    tuned = _ours(family, task, kwargs)
    perturb(tuned)
    tuned.save_pretrained(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    loaded = peft.PeftModel.from_pretrained(tiny_model(family, task), tmp_path / "a").eval()
    peft_state = get_peft_model_state_dict(loaded)
    assert sorted(saved) == sorted(peft_state)
    result = peft.set_peft_model_state_dict(loaded, saved)
    assert result.unexpected_keys == []
    assert [k for k in result.missing_keys if "ia3_l" in k or "modules_to_save" in k] == []
    inputs = model_inputs(family, task)
    with torch.no_grad():
        expected = tuned.eval()(**inputs).logits
        got = loaded(**inputs).logits
        base = tiny_model(family, task)(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_saved_by_peft_loads_in_tuners_with_equal_outputs(case, tmp_path):
    family, task, kwargs = CASES[case]
    made = _peft_twin(family, task, _ours(family, task, kwargs))
    perturb(made)
    made.save_pretrained(tmp_path / "a")
    tuned = tuners.load(tiny_model(family, task), tmp_path / "a").eval()
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert sorted(tuned.adapter_state_dict()) == sorted(saved)
    inputs = model_inputs(family, task)
    with torch.no_grad():
        torch.testing.assert_close(tuned(**inputs).logits, made.eval()(**inputs).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_parameter_counts_equal_peft(case):
    family, task, kwargs = CASES[case]
    tuned = _ours(family, task, kwargs)
    assert tuned.trainable_parameters() == _peft_twin(family, task, tuned).get_nb_trainable_parameters()


def test_layer_follows_the_formula_for_both_kinds():
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 3)
    x = torch.randn(4, 5)
    attention, feedforward = IA3Linear(base, is_feedforward=False), IA3Linear(base, is_feedforward=True)
    for layer in (attention, feedforward):
        layer.add("a", init_ones=False)
        layer.set_adapter("a")
    l_out, l_in = attention.ia3_l["a"].detach(), feedforward.ia3_l["a"].detach()
    assert l_out.shape == (3, 1) and l_in.shape == (1, 5)
    w, b = base.weight.detach(), base.bias.detach()
    torch.testing.assert_close(attention(x), (x @ w.T + b) * l_out.flatten())
    torch.testing.assert_close(feedforward(x), (x * l_in.flatten()) @ w.T + b)


def test_default_initialisation_is_the_base_model():
    inputs = model_inputs("llama", "CAUSAL_LM")
    with torch.no_grad():
        expected = tiny_model("llama")(**inputs).logits
        got = _ours("llama", "CAUSAL_LM", {})(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_merge_and_unload_gives_the_adapted_outputs(family):
    task = "CAUSAL_LM" if family == "gpt2" else "SEQ_CLS"
    tuned = _ours(family, task, {})
    perturb(tuned)
    inputs = model_inputs(family, task)
    with torch.no_grad():
        expected = tuned(**inputs).logits
        tuned.merge()
        torch.testing.assert_close(tuned(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
        tuned.unmerge()
        torch.testing.assert_close(tuned(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
        merged = tuned.merge_and_unload()
        assert not any(isinstance(m, IA3Linear) for m in merged.modules())
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(target_modules=["q_proj"], feedforward_modules=["down_proj"]), "feedforward_modules"),
        (dict(target_modules=["q_proj"]), "feedforward_modules"),
        (dict(feedforward_modules=["down_proj"]), "feedforward_modules"),
        (dict(init_ia3_weights="yes"), "init_ia3_weights"),
        (dict(target_modules=["nope"], feedforward_modules=[]), "target_modules"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(tuners.ConfigError, match=f"^{field}"):
        _ours("llama", "CAUSAL_LM", kwargs)


@pytest.mark.parametrize("family,task", [("llama", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_training_lowers_the_loss(family, task):
    # A random tiny model's frozen head keeps the LM loss near log(vocab); a few scaling vectors still move it.
    # 0.2 moves the scaling vectors; the head (BERT's classifier and its trained pooler) learns at its own rate.
    losses = train_losses(_ours(family, task, {}), family, task, lr=0.2, head_lr=1e-2)
    assert losses[-1] < losses[0] - 0.1

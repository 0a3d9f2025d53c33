"""BitFit and layer freezing: exactly the chosen base parameters train, save and load; loss goes down."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.synthetic_task import model_inputs, perturb, train_losses
from tuners.methods.bitfit import BitFitConfig
from tuners.methods.layer_freeze import LayerFreezeConfig


def _trainable_names(tuned):
    return {n for n, p in tuned.named_parameters() if p.requires_grad}


def test_bitfit_trains_every_bias_and_the_classification_head():
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"), BitFitConfig(task_type="SEQ_CLS"))
    names = _trainable_names(tuned)
    biases = {n for n, _ in tiny_model("bert", "SEQ_CLS").named_parameters()
              if n.endswith(".bias") and "classifier" not in n and "pooler" not in n}
    assert {n.removeprefix("model.") for n in names if "modules_to_save" not in n} == biases
    assert {n for n in names if "modules_to_save" in n} == {  # the head: the classifier and the pooler it reads
        "model.classifier.modules_to_save.default.weight", "model.classifier.modules_to_save.default.bias",
        "model.bert.pooler.modules_to_save.default.dense.weight",
        "model.bert.pooler.modules_to_save.default.dense.bias",
    }
    head = 32 * 3 + 3 + 32 * 32 + 32
    assert tuned.trainable_parameters()[0] == sum(p.numel() for n, p in tuned.named_parameters() if n[6:] in biases) + head


def test_bitfit_linear_only_skips_norm_biases():
    tuned = tuners.apply(tiny_model("gpt2"), BitFitConfig(bias_kinds="linear"))
    names = _trainable_names(tuned)
    assert names and all(".c_" in n for n in names)  # c_attn, c_proj, c_fc: no ln_1/ln_2/ln_f


@pytest.mark.parametrize("family,task", [("llama", "CAUSAL_LM"), ("t5", "SEQ_2_SEQ_LM")])
def test_bitfit_on_a_model_without_biases_is_a_clear_error(family, task):
    with pytest.raises(tuners.ConfigError, match="has no bias terms"):
        tuners.apply(tiny_model(family, task), BitFitConfig(task_type=task))


def test_bitfit_save_holds_only_biases_and_head_and_loads_back(tmp_path):
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"), BitFitConfig(task_type="SEQ_CLS"))
    perturb(tuned)
    tuned.save_pretrained(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert all(k.endswith(".bias") or k in ("base_model.model.classifier.weight",
                                            "base_model.model.bert.pooler.dense.weight") for k in saved)
    assert sum(v.numel() for v in saved.values()) == tuned.trainable_parameters()[0]
    loaded = tuners.load(tiny_model("bert", "SEQ_CLS"), tmp_path / "a")
    inputs = model_inputs("bert", "SEQ_CLS")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)
        assert not torch.allclose(loaded(**inputs).logits, tiny_model("bert", "SEQ_CLS")(**inputs).logits)


def test_layer_freeze_trains_the_last_blocks_and_final_norm():
    tuned = tuners.apply(tiny_model("llama"), LayerFreezeConfig(num_trainable_layers=1))
    names = _trainable_names(tuned)
    assert names and all(n.startswith(("model.model.layers.1.", "model.model.norm.")) for n in names)
    assert any(n.startswith("model.model.norm.") for n in names)
    expected = sum(p.numel() for p in tiny_model("llama").model.layers[1].parameters()) + 32
    assert tuned.trainable_parameters()[0] == expected


def test_layer_freeze_chosen_blocks_apply_to_each_stack_of_t5():
    tuned = tuners.apply(
        tiny_model("t5", "SEQ_2_SEQ_LM"),
        LayerFreezeConfig(layers=[0], train_final_norm=False, task_type="SEQ_2_SEQ_LM"),
    )
    stacks = {n.split(".")[1] + "." + n.split(".")[3] for n in _trainable_names(tuned)}
    assert stacks == {"encoder.0", "decoder.0"}


def test_layer_freeze_save_load_round_trip(tmp_path):
    tuned = tuners.apply(tiny_model("gpt2"), LayerFreezeConfig(layers=[-1], train_embeddings=True))
    perturb(tuned, scale=0.05)
    tuned.save_pretrained(tmp_path / "a")
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert "base_model.model.transformer.wte.weight" in saved
    assert not any(".h.0." in k for k in saved)
    loaded = tuners.load(tiny_model("gpt2"), tmp_path / "a")
    inputs = model_inputs("gpt2", "CAUSAL_LM")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tuned(**inputs).logits, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,field", [
    (dict(num_trainable_layers=0), "num_trainable_layers"),
    (dict(layers=[]), "layers"),
    (dict(layers=[7]), "layers"),
    (dict(target_modules=["q_proj"]), "target_modules"),
])
def test_layer_freeze_bad_config_names_the_field(kwargs, field):
    with pytest.raises(tuners.ConfigError, match=f"^{field}"):
        tuners.apply(tiny_model("llama"), LayerFreezeConfig(**kwargs))


def test_bitfit_bad_config_names_the_field():
    with pytest.raises(tuners.ConfigError, match="^bias_kinds"):
        tuners.apply(tiny_model("gpt2"), BitFitConfig(bias_kinds="some"))


@pytest.mark.parametrize("family,task", [("gpt2", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_bitfit_lowers_the_loss(family, task):
    losses = train_losses(tuners.apply(tiny_model(family, task), BitFitConfig(task_type=task)), family, task, steps=12, lr=1e-2 if task == "SEQ_CLS" else 0.05)
    assert losses[-1] < losses[0] - 0.1


@pytest.mark.parametrize("family,task", [("llama", "CAUSAL_LM"), ("bert", "SEQ_CLS")])
def test_layer_freeze_lowers_the_loss(family, task):
    tuned = tuners.apply(tiny_model(family, task), LayerFreezeConfig(num_trainable_layers=1, task_type=task))
    losses = train_losses(tuned, family, task, steps=12, lr=1e-2)
    assert losses[-1] < losses[0] - 0.1

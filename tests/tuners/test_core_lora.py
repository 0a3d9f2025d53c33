"""The core's contract, checked on LoRA: exact math, gradients, training, named adapters, merging."""

from __future__ import annotations

import peft
import pytest
import torch
from torch import nn

import tuners
from tests.support.tiny_models import batch, tiny_model
from tuners.config import ConfigError
from tuners.layers import AdapterLayer, ModulesToSave
from tuners.methods.lora import LoraConfig

CONFIGS = {
    "lora-llama": ("llama", dict(target_modules="all-linear", r=4)),
    "rslora-gaussian-llama": ("llama", dict(target_modules=["q_proj", "v_proj"], r=4, use_rslora=True,
                                             init_lora_weights="gaussian")),
    "dora-llama": ("llama", dict(target_modules=["q_proj", "down_proj"], r=4, use_dora=True)),
    "embedding-llama": ("llama", dict(target_modules=["embed_tokens", "k_proj"], r=4)),
    "conv1d-gpt2": ("gpt2", dict(target_modules=["c_attn", "c_proj", "c_fc"], r=4)),
    "dora-conv1d-gpt2": ("gpt2", dict(target_modules=["c_attn", "c_proj"], r=4, use_dora=True)),
}


def _perturb(tuned: tuners.TunedModel, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.adapter_parameters().values():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def _logits(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters()
            if "lora_" not in n and "modules_to_save" not in n}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_zero_initialised_adapter_is_exactly_the_base(case):
    family, kwargs = CONFIGS[case]
    inputs = batch(family)
    expected = _logits(tiny_model(family), inputs)
    tuned = tuners.apply(tiny_model(family), tuners.LoraConfig(**kwargs))
    torch.testing.assert_close(_logits(tuned, inputs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("case", list(CONFIGS))
def test_merge_agrees_with_unmerged_and_unmerge_restores_the_base_weights(case):
    family, kwargs = CONFIGS[case]
    inputs = batch(family)
    tuned = tuners.apply(tiny_model(family), tuners.LoraConfig(**kwargs))
    _perturb(tuned)
    before = _base_weights(tuned.model)
    unmerged = _logits(tuned, inputs)
    assert not torch.allclose(unmerged, _logits(tiny_model(family), inputs), atol=1e-4)
    tuned.merge()
    torch.testing.assert_close(_logits(tuned, inputs), unmerged, rtol=0, atol=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in _base_weights(tuned.model).items())
    tuned.unmerge()
    tolerance = 1e-5 if kwargs.get("use_dora") else 1e-6  # DoRA unmerges by dividing by the merge scale
    for key, value in _base_weights(tuned.model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=tolerance, msg=key)
    torch.testing.assert_close(_logits(tuned, inputs), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["lora-llama", "dora-conv1d-gpt2", "embedding-llama"])
def test_merge_and_unload_returns_the_plain_model_with_equal_outputs(case):
    family, kwargs = CONFIGS[case]
    inputs = batch(family)
    tuned = tuners.apply(tiny_model(family), tuners.LoraConfig(**kwargs))
    _perturb(tuned)
    expected = _logits(tuned, inputs)
    plain = tuned.merge_and_unload()
    assert type(plain) is type(tiny_model(family))
    assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert sorted(plain.state_dict()) == sorted(tiny_model(family).state_dict())
    torch.testing.assert_close(_logits(plain, inputs), expected, rtol=0, atol=1e-5)


def test_merge_and_unload_keeps_the_trained_classification_head():
    inputs = batch("bert")
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                         tuners.LoraConfig(r=4, target_modules="attention", task_type="SEQ_CLS"))
    _perturb(tuned)
    expected = _logits(tuned, inputs)
    plain = tuned.merge_and_unload()
    assert isinstance(plain.classifier, nn.Linear)
    torch.testing.assert_close(_logits(plain, inputs), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "bias,expected_biases",
    [
        ("none", set()),
        ("lora_only", {"query.base_layer.bias", "value.base_layer.bias"}),
        ("all", {"query.base_layer.bias", "value.base_layer.bias", "key.bias", "dense.bias", "LayerNorm.bias"}),
    ],
)
def test_only_adapter_head_and_chosen_biases_get_gradients(bias, expected_biases):
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                         tuners.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS", bias=bias))
    tuned.train()
    out = tuned(**batch("bert"), labels=torch.tensor([0, 2]))
    out.loss.backward()
    with_grad = {n for n, p in tuned.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    requires = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert with_grad <= requires
    for name in requires:
        adapter = ".lora_A." in name or ".lora_B." in name
        head_copy = name.startswith(("model.classifier.modules_to_save.default.",
                                     "model.bert.pooler.modules_to_save.default."))
        leaf_bias = name.endswith(".bias") and any(name.endswith(b) for b in expected_biases)
        assert adapter or head_copy or leaf_bias, name
    assert any(".lora_B." in n for n in with_grad)
    assert "model.classifier.modules_to_save.default.weight" in with_grad
    assert "model.classifier.base_layer.weight" not in requires  # the original head stays frozen
    got_biases = {b for b in expected_biases if any(n.endswith(b) for n in with_grad)}
    assert got_biases == expected_biases
    if bias == "none":
        assert not any(n.endswith(".bias") and "modules_to_save" not in n for n in requires)


@pytest.mark.parametrize(
    "family,task,labels,overrides",
    [
        # a larger init gives the frozen LM head enough reach for the adapter to move the logits
        ("llama", "CAUSAL_LM", None, {"initializer_range": 0.2}),
        ("bert", "SEQ_CLS", [0, 2], {}),
        ("t5", "SEQ_2_SEQ_LM", None, {}),
        ("bert", "TOKEN_CLS", None, {}),
    ],
)
def test_a_few_adamw_steps_lower_the_loss(family, task, labels, overrides):
    torch.manual_seed(0)
    inputs = batch(family, ("the cat sat on the mat", "one two three four five six"))
    if task == "CAUSAL_LM":
        inputs["labels"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    elif task == "SEQ_2_SEQ_LM":
        inputs["labels"] = inputs["input_ids"][:, :5].clone()
    elif task == "TOKEN_CLS":
        inputs["labels"] = (inputs["input_ids"] % 3).masked_fill(inputs["attention_mask"] == 0, -100)
    else:
        inputs["labels"] = torch.tensor(labels)
    tuned = tuners.apply(tiny_model(family, task, **overrides),
                         tuners.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type=task))
    params = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    tuned.train()
    losses = []
    for _ in range(15):
        loss = tuned(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0], losses


def test_disabled_gives_the_base_output_and_restores_the_adapter():
    inputs = batch("llama")
    base = _logits(tiny_model("llama"), inputs)
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=4, target_modules="all-linear"))
    _perturb(tuned)
    adapted = _logits(tuned, inputs)
    with tuned.disabled():
        torch.testing.assert_close(_logits(tuned, inputs), base, rtol=0, atol=0)
    torch.testing.assert_close(_logits(tuned, inputs), adapted, rtol=0, atol=0)


def test_disabled_also_turns_off_a_trained_head():
    inputs = batch("bert")
    base = _logits(tiny_model("bert", "SEQ_CLS"), inputs)
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                         tuners.LoraConfig(r=4, target_modules=["query"], task_type="SEQ_CLS"))
    _perturb(tuned)
    with tuned.disabled():
        torch.testing.assert_close(_logits(tuned, inputs), base, rtol=0, atol=0)


def _single(kwargs: dict, seed: int) -> tuple[tuners.TunedModel, torch.Tensor]:
    model = tiny_model("llama")
    torch.manual_seed(seed)
    tuned = tuners.apply(model, tuners.LoraConfig(**kwargs))
    _perturb(tuned, seed)
    return tuned, _logits(tuned, batch("llama"))


def test_named_adapters_switch_delete_and_train_alone():
    inputs = batch("llama")
    first_kwargs = dict(r=4, target_modules=["q_proj", "v_proj"])
    second_kwargs = dict(r=2, target_modules=["v_proj", "o_proj"], use_dora=True)
    _, first_alone = _single(first_kwargs, 1)
    _, second_alone = _single(second_kwargs, 2)

    model = tiny_model("llama")
    torch.manual_seed(1)
    tuned = tuners.apply(model, tuners.LoraConfig(**first_kwargs), adapter_name="first")
    _perturb(tuned, 1)
    torch.manual_seed(2)
    tuned.add_adapter("second", tuners.LoraConfig(**second_kwargs))
    _perturb(tuned, 2)
    assert tuned.active_adapter == "second"
    torch.testing.assert_close(_logits(tuned, inputs), second_alone, rtol=0, atol=1e-6)
    trainable = [n for n, p in tuned.named_parameters() if p.requires_grad]
    assert trainable and all(".second" in n for n in trainable)

    tuned.set_adapter("first")
    torch.testing.assert_close(_logits(tuned, inputs), first_alone, rtol=0, atol=1e-6)
    assert all(".first" in n for n, p in tuned.named_parameters() if p.requires_grad)

    with pytest.raises(tuners.ConfigError, match="already exists"):
        tuned.add_adapter("first", tuners.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(KeyError, match="no adapter named 'third'"):
        tuned.set_adapter("third")

    tuned.delete_adapter("first")
    assert tuned.active_adapter == "second"
    torch.testing.assert_close(_logits(tuned, inputs), second_alone, rtol=0, atol=1e-6)
    attn = tuned.model.model.layers[0].self_attn
    assert isinstance(attn.q_proj, nn.Linear)  # only "first" adapted q_proj: unwrapped again
    assert list(attn.v_proj.lora_A) == ["second"]

    tuned.delete_adapter("second")
    assert tuned.active_adapter is None
    assert not any(isinstance(m, AdapterLayer) for m in tuned.model.modules())
    torch.testing.assert_close(_logits(tuned, inputs), _logits(tiny_model("llama"), inputs), rtol=0, atol=0)


def test_merging_two_dora_adapters_and_unmerging_restores_the_base():
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True),
                         adapter_name="a")
    _perturb(tuned, 1)
    tuned.add_adapter("b", tuners.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    _perturb(tuned, 2)
    before = _base_weights(tuned.model)
    tuned.merge("a")
    tuned.merge("b")
    with pytest.raises(RuntimeError, match="merged"):
        tuned.delete_adapter("a")
    tuned.unmerge()
    for key, value in _base_weights(tuned.model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=1e-5, msg=key)


def test_apply_leaves_the_callers_config_untouched():
    config = tuners.LoraConfig(r=4, target_modules="attention")
    tuned = tuners.apply(tiny_model("gpt2"), config)
    assert config.target_modules == "attention" and config.fan_in_fan_out is False
    assert tuned.config.target_modules == ["c_attn"] and tuned.config.fan_in_fan_out is True


def test_sequence_classification_head_is_added_to_modules_to_save():
    tuned = tuners.apply(tiny_model("gpt2", "SEQ_CLS"), tuners.LoraConfig(r=4, target_modules=["c_attn"],
                                                                          task_type="SEQ_CLS"))
    assert tuned.config.modules_to_save == ["score"]
    assert isinstance(tuned.model.score, ModulesToSave)
    assert "base_model.model.score.weight" in tuned.adapter_state_dict()


def test_a_bert_classifier_trains_its_pooler_with_the_head(tmp_path):
    """BERT's classifier reads the pooler, which a sentence-transformers checkpoint never trained: it is
    part of the head for a new adapter, left to the method when the named targets reach into it, and not
    added to an adapter loaded from a folder that did not train it (peft's)."""
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                         tuners.LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS"))
    assert tuned.config.modules_to_save == ["classifier", "pooler"]
    assert not any(n.startswith("bert.pooler") for n in tuned.config.target_modules)
    assert {id(p) for p in tuned.head_parameters()} == {
        id(p) for n, p in tuned.named_parameters() if ".modules_to_save.default." in n}
    assert len(tuned.head_parameters()) == 4  # pooler.dense and classifier, weight and bias

    inside = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                          tuners.LoraConfig(r=4, target_modules=["query", "dense"], task_type="SEQ_CLS"))
    assert inside.config.modules_to_save == ["classifier"]
    assert isinstance(inside.model.bert.pooler.dense, tuners.layers.AdapterLayer)

    made = peft.get_peft_model(tiny_model("bert", "SEQ_CLS"),
                               peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query"]))
    made.save_pretrained(tmp_path / "peft")
    loaded = tuners.load(tiny_model("bert", "SEQ_CLS"), tmp_path / "peft")
    assert "pooler" not in loaded.config.modules_to_save


@pytest.mark.parametrize("peft_type", ["LAYER_FREEZE", "FISHMASK", "BITFIT", "FULL"])
def test_the_pooler_is_trained_once_by_the_head_unless_the_method_trains_it(peft_type):
    """Layer freezing trains the top blocks and FishMask a sparse mask of the linear layers, neither the
    pooler: left out of the head it stayed frozen at its untrained weights and both ended at the majority
    class on the drug reviews (docs/runs.md). Full fine-tuning trains it with the rest, so no copy."""
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                         tuners.config_from_dict({"peft_type": peft_type, "task_type": "SEQ_CLS"}))
    pooler = {n for n, p in tuned.named_parameters() if p.requires_grad and ".pooler." in n}
    if peft_type == "FULL":
        assert tuned.config.modules_to_save == ["classifier"]
        assert pooler == {"model.bert.pooler.dense.weight", "model.bert.pooler.dense.bias"}
    else:
        assert tuned.config.modules_to_save == ["classifier", "pooler"]
        assert pooler == {"model.bert.pooler.modules_to_save.default.dense.weight",
                          "model.bert.pooler.modules_to_save.default.dense.bias"}
        assert len(tuned.head_parameters()) == 4


def test_head_parameters_are_the_task_heads_not_other_copies():
    """``lm_head`` kept whole (modules_to_save) is pretrained: it learns at the run's rate, not the head's."""
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    assert tuned.head_parameters() == []
    scored = tuners.apply(tiny_model("llama", "SEQ_CLS"), tuners.LoraConfig(r=2, target_modules=["q_proj"],
                                                                            task_type="SEQ_CLS"))
    assert [p.shape for p in scored.head_parameters()] == [scored.model.score.base_layer.weight.shape]


def test_trainable_parameters_counts_adapter_and_head():
    tuned = tuners.apply(tiny_model("bert", "SEQ_CLS"),
                         tuners.LoraConfig(r=4, target_modules=["query"], task_type="SEQ_CLS"))
    trainable, total = tuned.trainable_parameters()
    # per layer: A (4 x 32) + B (32 x 4); two layers; head: the pooler 32 x 32 + 32, the classifier 32 x 3 + 3
    assert trainable == 2 * (4 * 32 + 32 * 4) + 32 * 32 + 32 + 32 * 3 + 3
    assert total == sum(p.numel() for p in tiny_model("bert", "SEQ_CLS").parameters()) + trainable


def test_dora_on_an_embedding_is_refused_by_name():
    with pytest.raises(tuners.ConfigError, match="use_dora: DoRA is not supported on embedding layers"):
        tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=2, target_modules=["embed_tokens"], use_dora=True))


def test_a_failed_add_leaves_the_model_as_it_was():
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=2, target_modules=["q_proj"]))
    before = sorted(n for n, _ in tuned.named_parameters())
    with pytest.raises(tuners.ConfigError):
        tuned.add_adapter("bad", tuners.LoraConfig(r=2, target_modules=["q_proj", "embed_tokens"], use_dora=True))
    with pytest.raises(tuners.ConfigError, match="modules_to_save"):
        tuned.add_adapter("bad", tuners.LoraConfig(r=2, target_modules=["k_proj"], modules_to_save=["nohead"]))
    assert sorted(n for n, _ in tuned.named_parameters()) == before
    assert isinstance(tuned.model.model.embed_tokens, nn.Embedding)
    assert isinstance(tuned.model.model.layers[0].self_attn.k_proj, nn.Linear)
    assert list(tuned.configs) == ["default"] and tuned.active_adapter == "default"


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("r", 0, "r: must be a positive integer"),
        ("lora_alpha", -1, "lora_alpha: must be positive"),
        ("lora_dropout", 1.0, r"lora_dropout: must be in \[0, 1\)"),
        ("bias", "some", "bias: must be one of"),
        ("init_lora_weights", "pissa", "init_lora_weights: must be true, false or 'gaussian'"),
        ("rank_pattern", {"q_proj": 0}, r"rank_pattern\['q_proj'\]: must be positive"),
        ("task_type", "CAUSAL", "task_type: 'CAUSAL' is not one of"),
        ("target_modules", "(", "target_modules: '\\(' is not a valid regular expression"),
    ],
)
def test_bad_config_values_are_named(field, value, message):
    config = tuners.LoraConfig(target_modules=["q_proj"]).replace(**{field: value})
    with pytest.raises(tuners.ConfigError, match=message):
        tuners.apply(tiny_model("llama"), config)


def test_a_rank_above_a_layers_smaller_side_is_refused_by_name():
    # The tiny Llama's v_proj maps 32 -> 16 (grouped-query attention), so r=17 fits q_proj but not v_proj.
    with pytest.raises(ConfigError, match=r"r: 17 is larger than layer model\.layers\.0\.self_attn\.v_proj's "
                                          r"smaller dimension \(16\); use a rank of at most 16"):
        tuners.apply(tiny_model("llama"), LoraConfig(r=17, target_modules=["q_proj", "v_proj"]))
    tuners.apply(tiny_model("llama"), LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))

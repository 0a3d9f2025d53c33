"""AdaLoRA against peft 0.21.2 (the oracle): format, outputs, regulariser and the rank budget schedule."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model
from tests.tuners.reparam_support import (
    assert_merge_matches_unmerged,
    assert_ours_loads_in_peft,
    assert_peft_loads_in_ours,
    eval_loss,
    inputs_for,
    logits,
    peft_model_from,
    peft_trainable_count,
    perturb,
    train,
)
from tuners.methods.adalora import AdaloraConfig, AdaloraLayer, budget_schedule

# peft's AdaLoRA adapts nn.Linear and GPT-2's Conv1D.
FAMILIES = [("llama", ["q_proj", "v_proj", "down_proj"]), ("gpt2", ["c_attn", "c_fc"])]
SCHEDULE = dict(init_r=6, target_r=2, total_step=12, tinit=2, tfinal=3, deltaT=2, lora_alpha=4)


def peft_config(targets, **kw):
    from peft import AdaLoraConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AdaLoraConfig(task_type="CAUSAL_LM", target_modules=targets, **kw)


def ours(family, targets, **kw):
    return tuners.apply(tiny_model(family), AdaloraConfig(target_modules=targets, **{"total_step": 10, **kw}))


@pytest.mark.parametrize("family,targets", FAMILIES)
def test_saved_adapter_loads_in_peft_with_equal_outputs(family, targets, tmp_path):
    tuned = ours(family, targets, init_r=4, lora_alpha=6)
    perturb(tuned)
    assert_ours_loads_in_peft(tuned, family, "CAUSAL_LM", tmp_path)


@pytest.mark.parametrize("family,targets", FAMILIES)
def test_peft_adapter_loads_in_ours_with_equal_outputs(family, targets, tmp_path):
    assert_peft_loads_in_ours(peft_config(targets, init_r=5, lora_alpha=3, total_step=10), family, "CAUSAL_LM",
                              tmp_path)


@pytest.mark.parametrize("family,targets", FAMILIES)
def test_parameter_counts_equal_peft(family, targets):
    tuned = ours(family, targets, init_r=5)
    assert tuned.trainable_parameters() == peft_trainable_count(peft_config(targets, init_r=5, total_step=10),
                                                                family, "CAUSAL_LM")


def test_update_is_svd_form_scaled_by_alpha_over_init_rank():
    base = torch.nn.Linear(6, 5)
    layer = AdaloraLayer(base)
    layer.add("a", "x", AdaloraConfig(init_r=3, lora_alpha=4, total_step=5, target_modules=["x"],
                                      init_lora_weights=False))
    p, lam, q = layer.lora_B["a"], layer.lora_E["a"], layer.lora_A["a"]
    layer.set_adapter("a")
    x = torch.randn(2, 6)
    expected = base(x) + x @ (p @ torch.diag(lam.view(-1)) @ q).T * (4 / (3 + 1e-5))
    torch.testing.assert_close(layer(x), expected)


def test_fresh_adapter_is_the_base_model():
    tuned = ours("llama", "all-linear")
    with tuned.disabled():
        base = logits(tuned, inputs_for("llama"))
    torch.testing.assert_close(logits(tuned, inputs_for("llama")), base, rtol=0, atol=0)


@pytest.mark.parametrize("family,targets", FAMILIES)
def test_merged_equals_unmerged(family, targets):
    assert_merge_matches_unmerged(ours(family, targets), family)


def test_orthogonal_regulariser_equals_peft(tmp_path):
    from peft import get_peft_model

    targets = ["q_proj", "v_proj"]
    theirs = get_peft_model(tiny_model("llama"), peft_config(targets, init_r=4, total_step=10, orth_reg_weight=0.3))
    perturb(theirs, scale=0.3)
    theirs.save_pretrained(str(tmp_path))
    inputs = inputs_for("llama", with_labels=True)
    with torch.no_grad():
        with_term = theirs(**inputs).loss
        without = theirs.base_model.model(**inputs).loss
    tuned = tuners.load(tiny_model("llama"), tmp_path)
    term = tuned.method.loss_term(tuned, "default")
    assert term.item() > 0.01
    torch.testing.assert_close(term, with_term - without, rtol=1e-5, atol=1e-6)


def test_budget_schedule_is_cubic_from_initial_to_target():
    config = AdaloraConfig(target_modules=["q"], **SCHEDULE)
    budgets = [budget_schedule(config, step, 24, 8) for step in range(14)]
    assert budgets[:3] == [(24, False)] * 3  # warm-up up to tinit
    assert [b for b, _ in budgets[3:10]] == [int(16 * (1 - (s - 2) / 7) ** 3 + 8) for s in range(3, 10)]
    assert [m for _, m in budgets[3:10]] == [s % 2 == 0 for s in range(3, 10)]
    assert budgets[10:] == [(8, True)] * 4  # final phase


def _train_pair(tmp_path):
    """Train peft's AdaLoRA and ours from the same weights with the same steps; yields the patterns."""
    from peft import get_peft_model

    targets = ["q_proj", "v_proj"]
    theirs = get_peft_model(tiny_model("llama"), peft_config(targets, **SCHEDULE))
    perturb(theirs, scale=0.05)
    theirs.save_pretrained(str(tmp_path / "start"))
    tuned = tuners.load(tiny_model("llama"), tmp_path / "start", is_trainable=True)
    inputs = inputs_for("llama", with_labels=True)
    opt_theirs = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.5)
    opt_ours = torch.optim.SGD([p for p in tuned.parameters() if p.requires_grad], lr=0.5)
    method = tuned.method
    steps = []
    for step in range(SCHEDULE["total_step"]):
        theirs(**inputs).loss.backward()
        opt_theirs.step()
        theirs.base_model.update_and_allocate(step)
        opt_theirs.zero_grad()
        (tuned(**inputs).loss + method.loss_term(tuned, "default")).backward()
        opt_ours.step()
        method.after_backward(tuned, "default", step)
        opt_ours.zero_grad()
        theirs_pattern = theirs.peft_config["default"].rank_pattern
        theirs_pattern = {k.replace(".default", ""): v for k, v in (theirs_pattern or {}).items()}
        steps.append((step, dict(tuned.config.rank_pattern or {}), theirs_pattern))
    return tuned, theirs, steps


def test_rank_budget_masks_ranks_over_the_schedule_like_peft(tmp_path):
    tuned, theirs, steps = _train_pair(tmp_path)
    kept = []
    for step, pattern, theirs_pattern in steps:
        assert pattern == theirs_pattern, f"step {step}"
        kept.append(sum(sum(mask) for mask in pattern.values()) if pattern else 24)
    assert kept[:3] == [24, 24, 24]
    assert kept[-1] == 8 == SCHEDULE["target_r"] * 4
    assert all(a >= b for a, b in zip(kept, kept[1:])) and len(set(kept)) > 2
    # masked singular values are zero in memory, the kept ones are not
    for path, layer in tuned.adapter_layers():
        keep = torch.tensor(tuned.config.rank_pattern[f"{path}.lora_E"])
        assert (layer.lora_E["default"][~keep] == 0).all() and (layer.lora_E["default"][keep] != 0).all()
    torch.testing.assert_close(logits(tuned, inputs_for("llama")), logits(theirs, inputs_for("llama")),
                               rtol=1e-4, atol=1e-4)


def test_rank_pattern_round_trips_through_peft(tmp_path):
    tuned, _, _ = _train_pair(tmp_path)
    pattern = tuned.config.rank_pattern
    assert_ours_loads_in_peft(tuned, "llama", "CAUSAL_LM", tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert saved["rank_pattern"] == pattern
    weights = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
    for key, mask in pattern.items():
        assert weights[f"base_model.model.{key}"].shape == (sum(mask), 1)
    # peft re-saves the pattern it loaded; ours loads that folder back with the same outputs
    theirs = peft_model_from(tmp_path / "ours", "llama", "CAUSAL_LM")
    theirs.save_pretrained(str(tmp_path / "theirs"))
    again = tuners.load(tiny_model("llama"), tmp_path / "theirs")
    assert again.config.rank_pattern == pattern
    torch.testing.assert_close(logits(again, inputs_for("llama")), logits(tuned, inputs_for("llama")),
                               rtol=1e-5, atol=1e-5)
    # and the in-memory layout survives a save/load of the state on the same model
    state = tuned.adapter_state_dict()
    tuned.load_adapter_state(state)
    torch.testing.assert_close(logits(tuned, inputs_for("llama")), logits(again, inputs_for("llama")),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family,targets", [("llama", "all-linear"), ("gpt2", "all-linear")])
def test_training_lowers_the_loss(family, targets):
    tuned = ours(family, targets, init_r=6, target_r=3, lora_alpha=16, total_step=10, tinit=2, tfinal=2)
    before = eval_loss(tuned, family)
    train(tuned, family, steps=10, lr=5e-2)
    assert eval_loss(tuned, family) < before - 0.2
    assert sum(sum(m) for m in tuned.config.rank_pattern.values()) == 3 * len(tuned.config.rank_pattern)


@pytest.mark.parametrize("changes,field", [
    (dict(total_step=0), "total_step"), (dict(tinit=8, tfinal=2), "tinit"), (dict(target_r=0), "target_r"),
    (dict(beta1=1.0), "beta1"), (dict(orth_reg_weight=-1), "orth_reg_weight"), (dict(deltaT=0), "deltaT"),
    (dict(rank_pattern={"q.lora_E": [1, 0]}), "rank_pattern"),
])
def test_invalid_config_names_the_field(changes, field):
    with pytest.raises(tuners.ConfigError, match=rf"^{field}"):
        AdaloraConfig(target_modules=["q_proj"], **{"total_step": 10, **changes}).validate()


def test_total_step_left_empty_is_the_runs_length_and_required_to_apply():
    config = AdaloraConfig(target_modules=["q_proj"])
    config.validate()
    with pytest.raises(tuners.ConfigError, match=r"^total_step"):
        tuners.apply(tiny_model("llama"), config)
    assert config.for_run(40).total_step == 40
    assert AdaloraConfig(target_modules=["q_proj"], total_step=7).for_run(40).total_step == 7

"""The engine's causal-LM loss from the last hidden states equals the loss from full logits.

The head is applied only to the target positions, a chunk at a time (worker.loss), with the real head
in place: here an adapter-wrapped one (LoRA on lm_head), and with prompt tuning's virtual tokens before
the text. A model whose logits are more than its head's output (Gemma 2 soft-caps them) keeps the plain
loss, and the run log says why.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from app.core.spec import RunSpec
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from tests.support.tiny_models import tokenizer
from worker.engine import MemoryReporter, TrainingRecipe, collate


def _recipe(root, method: dict | None = None, model_dir=None) -> TrainingRecipe:
    model_dir = model_dir or save_tiny_model(root / "llama")
    spec = mapping_spec(model_dir, write_mapping_csv(root / "colours.csv", repeats=2), max_steps=1)
    if method is not None:
        spec["method"] = method
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", MemoryReporter(), root / "models")
    recipe.setup()
    recipe.tuned.eval()  # no dropout: both sides of each comparison see the same function
    with torch.no_grad():  # a trained-looking adapter (LoRA's B starts at zero)
        generator = torch.Generator().manual_seed(1)
        for param in recipe.params:
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return recipe


def _loss_and_grads(recipe: TrainingRecipe, micro: list[dict[str, torch.Tensor]]):
    loss = recipe.forward_backward(micro)
    grads = {k: p.grad.detach().clone() for k, p in recipe.tuned.adapter_parameters().items() if p.grad is not None}
    recipe.tuned.zero_grad(set_to_none=True)
    return loss, grads


def _assert_plain_equals_hidden(recipe: TrainingRecipe) -> None:
    examples = [recipe.train_data[i] for i in range(6)]
    micro = [collate(examples[:4], recipe.pad_id), collate(examples[4:], recipe.pad_id)]
    assert recipe.hidden_loss
    hidden_loss, hidden_grads = _loss_and_grads(recipe, micro)
    recipe.hidden_loss = False
    plain_loss, plain_grads = _loss_and_grads(recipe, micro)
    recipe.hidden_loss = True

    assert hidden_loss == pytest.approx(plain_loss, rel=1e-6)
    assert hidden_grads.keys() == plain_grads.keys() and hidden_grads
    for key in plain_grads:
        torch.testing.assert_close(hidden_grads[key], plain_grads[key], rtol=1e-4, atol=1e-7, msg=key)


def test_the_hidden_state_loss_equals_the_full_logits_loss_with_an_adapter_on_the_head(tmp_path):
    recipe = _recipe(tmp_path)
    assert any(k.endswith("lm_head.lora_A.weight") for k in recipe.tuned.adapter_parameters())
    _assert_plain_equals_hidden(recipe)
    assert any("last hidden states" in line for line in recipe.reporter.lines)
    assert type(recipe.tuned.model.get_output_embeddings()).__name__ == "LoraLinear"  # the head is back


def test_the_hidden_state_loss_equals_the_full_logits_loss_after_prompt_tuning_s_virtual_tokens(tmp_path):
    recipe = _recipe(tmp_path, {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5})
    _assert_plain_equals_hidden(recipe)


def test_eval_loss_from_hidden_states_equals_the_full_logits_loss(tmp_path):
    recipe = _recipe(tmp_path)
    indices = list(range(len(recipe.eval_data)))
    with torch.no_grad():
        hidden = recipe._eval_pass(indices)
        recipe.hidden_loss = False
        plain = recipe._eval_pass(indices)
    assert hidden.targets == plain.targets > 0
    assert hidden.loss() == pytest.approx(plain.loss(), rel=1e-6)


def test_a_model_that_soft_caps_its_logits_keeps_the_plain_loss_and_the_log_says_why(tmp_path):
    tok = tokenizer("llama")
    config = transformers.Gemma2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, final_logit_softcapping=30.0)
    folder = tmp_path / "gemma2"
    transformers.Gemma2ForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)

    recipe = _recipe(tmp_path, {"peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]}, model_dir=folder)

    assert not recipe.hidden_loss
    assert any("full logits" in line and "soft-capping" in line for line in recipe.reporter.lines)
    loss = recipe.forward_backward([collate([recipe.train_data[0]], recipe.pad_id)])
    assert loss > 0

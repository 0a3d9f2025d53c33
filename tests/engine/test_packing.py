"""Padding-free batches: the same examples packed end to end give the loss and gradients of a padded batch.

Each example in a packed row attends only to itself (position ids restart, no attention mask: transformers
builds a block-diagonal causal mask) and its first token is no target, so nothing leaks across a boundary.
"""

from __future__ import annotations

import csv

import pytest
import torch
import transformers

from app.core.spec import RunSpec
from app.data.prepare import IGNORE
from tests.engine.helpers import COLOURS, mapping_spec, save_tiny_model
from tests.support.tiny_models import tokenizer
from worker import attention
from worker.engine import MemoryReporter, TrainingRecipe, collate
from worker.packing import REAL_TOKENS, assign_rows, pack_batch, segment_lengths


def test_rows_hold_whole_examples_within_the_width_balanced_longest_first():
    lengths = [30, 5, 12, 40, 7, 25]
    rows = assign_rows(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(6))
    totals = [sum(lengths[i] for i in row) for row in rows]
    assert len(rows) == 2 and max(totals) <= 64 and max(totals) - min(totals) <= 12
    assert assign_rows([100, 3], 64) == [[0], [1]]  # a longer example gets a row of its own


def test_a_packed_batch_restarts_positions_and_gives_no_example_s_first_token_a_label():
    examples = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
                {"input_ids": [8, 9, 10, 11, 12], "labels": [8, 9, 10, 11, 12]},
                {"input_ids": [13], "labels": [13]}]
    one_row = pack_batch(examples, pad_id=0, width=16)
    assert one_row["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13]]
    assert one_row["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 0]]
    assert one_row["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9, 10, 11, 12, IGNORE]]
    assert "attention_mask" not in one_row and one_row[REAL_TOKENS] == 9

    two_rows = pack_batch(examples, pad_id=0, width=5)
    assert two_rows["input_ids"].tolist() == [[8, 9, 10, 11, 12], [5, 6, 7, 13, 0]]
    assert two_rows["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]  # the pad continues the last
    assert two_rows["labels"].tolist() == [[IGNORE, 9, 10, 11, 12], [IGNORE, 6, 7, IGNORE, IGNORE]]
    assert two_rows[REAL_TOKENS] == 9


def test_a_data_packing_block_is_read_as_the_examples_it_holds():
    block = {"input_ids": [1, 2, 3, 4, 5, 6], "position_ids": [0, 1, 0, 1, 2, 0], "labels": [1, 2, 3, 4, 5, 6]}
    assert segment_lengths(block) == [2, 3, 1]
    packed = pack_batch([block], pad_id=0, width=8)
    assert packed["labels"].tolist() == [[IGNORE, 2, IGNORE, 4, 5, IGNORE]]


def _uneven_colours(path):
    """The colours mapping with questions and answers of many lengths (so a padded batch pads)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        for r in range(3):
            for i, (thing, colour) in enumerate(COLOURS.items()):
                polite = "please tell me, " * ((i + r) % 4)
                writer.writerow({"prompt": f"Q{r}: {polite}what colour is the {thing}? A:",
                                 "completion": f" {colour}" + " indeed" * ((i * r) % 3)})
    return path


def _recipe(root, family: str = "llama", method: dict | None = None, **data) -> TrainingRecipe:
    spec = mapping_spec(save_tiny_model(root / family, family), _uneven_colours(root / "colours.csv"),
                        max_steps=1)
    spec["data"].update(data)
    if method is not None:
        spec["method"] = method
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", MemoryReporter(), root / "models")
    recipe.setup()
    recipe.tuned.eval()  # no dropout: both sides of each comparison see the same function
    with torch.no_grad():  # a trained-looking adapter (LoRA's B and LLaMA-Adapter's gate start at zero)
        generator = torch.Generator().manual_seed(2)
        for param in recipe.params:
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return recipe


def _loss_and_grads(recipe: TrainingRecipe, micro: list[dict]) -> tuple[float, dict[str, torch.Tensor]]:
    loss = recipe.forward_backward(micro)
    grads = {k: p.grad.detach().clone() for k, p in recipe.tuned.adapter_parameters().items() if p.grad is not None}
    recipe.tuned.zero_grad(set_to_none=True)
    return loss, grads


@pytest.mark.parametrize(("family", "method"), [
    ("llama", None),  # LoRA on attention, MLP and the output head; rotary positions
    ("gpt2", {"peft_type": "LORA", "target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True}),  # learned positions
    ("llama", {"peft_type": "ADAPTION_PROMPT", "adapter_len": 4, "adapter_layers": 2}),  # wraps attention itself
])
def test_packed_examples_give_the_loss_and_gradients_of_the_padded_batch(tmp_path, family, method):
    recipe = _recipe(tmp_path, family, method)
    assert recipe.packed
    examples = [recipe.train_data[i] for i in range(7)]
    lengths = {len(e["input_ids"]) for e in examples}
    assert len(lengths) > 1  # uneven lengths: the padded batch pads

    padded = [collate(examples[:4], recipe.pad_id), collate(examples[4:], recipe.pad_id)]
    packed = [pack_batch(examples[:4], recipe.pad_id, width=40), pack_batch(examples[4:], recipe.pad_id, width=40)]
    assert packed[0]["input_ids"].shape[0] > 1  # several rows, one with a padding tail
    assert sum(b["input_ids"].numel() for b in packed) < sum(b["input_ids"].numel() for b in padded)

    padded_loss, padded_grads = _loss_and_grads(recipe, padded)
    packed_loss, packed_grads = _loss_and_grads(recipe, packed)

    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert packed_grads.keys() == padded_grads.keys() and packed_grads
    for key in padded_grads:
        torch.testing.assert_close(packed_grads[key], padded_grads[key], rtol=1e-4, atol=1e-6, msg=key)


def test_data_packing_blocks_train_as_the_examples_they_hold(tmp_path):
    recipe = _recipe(tmp_path, packing=True, max_length=48)
    blocks = [recipe.train_data[i] for i in range(3)]
    examples = []
    for block in blocks:
        start = 0
        for length in segment_lengths(block):
            examples.append({k: list(block[k][start : start + length]) for k in ("input_ids", "labels")})
            start += length
    assert len(examples) > len(blocks)  # blocks hold several examples

    packed_loss, packed_grads = _loss_and_grads(recipe, [pack_batch(blocks, recipe.pad_id, width=48)])
    padded_loss, padded_grads = _loss_and_grads(recipe, [collate(examples, recipe.pad_id)])

    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for key in padded_grads:
        torch.testing.assert_close(packed_grads[key], padded_grads[key], rtol=1e-4, atol=1e-6, msg=key)


def test_runs_pack_by_default_and_eval_losses_equal_the_padded_ones(tmp_path):
    recipe = _recipe(tmp_path)
    assert any("padding-free batches" in line for line in recipe.reporter.lines)
    indices = list(range(len(recipe.eval_data)))
    with torch.no_grad():
        packed = recipe._eval_pass(indices)
        recipe.packed = False
        padded = recipe._eval_pass(indices)
    assert (packed.targets, packed.examples) == (padded.targets, padded.examples) == (padded.targets, len(indices))
    assert packed.loss() == pytest.approx(padded.loss(), rel=1e-5)


def test_prompt_tuning_pads_and_the_log_says_why(tmp_path):
    recipe = _recipe(tmp_path, method={"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4})
    assert not recipe.packed
    assert any("padded batches" in line and "Prompt" in line for line in recipe.reporter.lines)
    assert "attention_mask" in recipe._batch([0, 1], recipe.train_data)


def _opt_recipe(tmp_path) -> TrainingRecipe:
    tok = tokenizer("llama")
    config = transformers.OPTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32,
        vocab_size=len(tok), max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    folder = tmp_path / "opt"
    transformers.OPTForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    spec = mapping_spec(folder, _uneven_colours(tmp_path / "colours.csv"), max_steps=1)
    spec["method"] = {"peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]}
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "out", MemoryReporter(), tmp_path / "models")
    recipe.setup()
    return recipe


def test_a_model_whose_mask_ignores_restarting_positions_pads_when_it_cannot_attend_per_example(tmp_path, monkeypatch):
    """OPT's sdpa mask does not read restarting positions as boundaries: packed examples would see each
    other. Attending per example fixes that (next test); a model that cannot be switched to it pads."""
    monkeypatch.setattr("worker.engine.use_packed_attention", lambda model: "its attention cannot be switched")
    recipe = _opt_recipe(tmp_path)

    assert not recipe.packed
    assert any("padded batches" in line and "position ids" in line for line in recipe.reporter.lines)


def test_opt_packs_through_per_example_attention_with_the_padded_loss_and_gradients(tmp_path):
    recipe = _opt_recipe(tmp_path)
    assert recipe.packed and recipe.tuned.model.config._attn_implementation == attention.NAME
    assert any("each example attended to alone" in line for line in recipe.reporter.lines)
    examples = [recipe.train_data[i] for i in range(6)]
    padded_loss, padded_grads = _loss_and_grads(recipe, [collate(examples, recipe.pad_id)])
    packed_loss, packed_grads = _loss_and_grads(recipe, [pack_batch(examples, recipe.pad_id, width=40)])
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for key in padded_grads:
        torch.testing.assert_close(packed_grads[key], padded_grads[key], rtol=1e-4, atol=1e-6, msg=key)


def test_per_example_attention_equals_the_block_diagonal_mask_and_skips_the_masked_blocks(monkeypatch):
    """Grouped-query heads (6 query heads on 2 key/value heads), two rows of three and two examples, the
    second row with a padded tail: outputs and gradients equal sdpa with transformers' block-diagonal
    causal mask, and the kernel is only ever called on one example's positions."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Heads(torch.nn.Module):
        num_key_value_groups = 3
        is_causal = True

    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]])
    segment = torch.stack([torch.cumsum((p == 0).int(), 0) for p in positions])
    causal = torch.arange(10)[:, None] >= torch.arange(10)[None, :]
    mask = (causal & (segment[:, :, None] == segment[:, None, :]))[:, None]
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, 10, 8, generator=generator, requires_grad=True) for heads in (6, 2, 2))

    expected, _ = sdpa_attention_forward(Heads(), q, k, v, mask, scaling=0.3)
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    lengths = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda query, *a, **kw: lengths.append(tuple(query.shape[::2])) or real(query, *a, **kw))
    got, _ = attention.packed_sdpa_forward(Heads(), q, k, v, mask, scaling=0.3, **attention.boundaries(positions))
    grads = torch.autograd.grad(got.square().sum(), (q, k, v))

    torch.testing.assert_close(got, expected)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)
    assert lengths == [(5, attention.GROUP_WIDTH_STEP)]  # five examples, each alone, not two rows of ten


def test_examples_are_grouped_by_length_and_padded_with_the_pad_index():
    groups = attention.example_groups([0, 3, 40, 45], pad=99, width_step=32)
    assert [g.tolist() for g in groups] == [
        [[0, 1, 2, *[99] * 29], [40, 41, 42, 43, 44, *[99] * 27]],
        [[*range(3, 40), *[99] * 27]],
    ]


def test_a_model_with_a_sliding_window_keeps_sdpa_and_its_mask():
    config = transformers.MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                        sliding_window=16)
    model = transformers.MistralForCausalLM(config)
    assert "sliding window (16 tokens)" in attention.use_packed_attention(model)
    assert model.config._attn_implementation == "sdpa"

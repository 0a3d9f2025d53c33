"""The training-memory estimate: storage widths per quantization and how the parts add up."""

import math

import pytest

from app.services.estimate import (
    ModelShape,
    bits_per_weight,
    estimate_training_memory,
    human_bytes,
)
from app.services.method_form import build_config, count_trainable, meta_model
from tests.support.tiny_models import config_for

SHAPE = ModelShape(
    total_params=135_000_000, linear_params=106_000_000, hidden_size=576, num_layers=30, num_heads=9,
    vocab_size=49152,
)


@pytest.mark.parametrize(
    ("precision", "quant", "bits"),
    [("fp32", "none", 32.0), ("bf16", "none", 16.0), ("bf16", "int8", 8.0), ("bf16", "nf4", 4.5),
     ("bf16", "nf4-dq", 4 + 8 / 64 + 32 / (64 * 256))],
)
def test_bits_per_weight_follow_the_storage_format(precision, quant, bits):
    assert math.isclose(bits_per_weight(precision, quant), bits)


def test_double_quantization_is_about_4_127_bits():
    assert round(bits_per_weight("bf16", "nf4-dq"), 3) == 4.127


def test_unknown_quantization_is_refused_by_name():
    with pytest.raises(ValueError, match="quantization"):
        bits_per_weight("bf16", "fp8")


def test_quantized_weights_take_the_expected_share_of_full_precision():
    full = estimate_training_memory(SHAPE, 1_000_000, "bf16", "none")
    nf4 = estimate_training_memory(SHAPE, 1_000_000, "bf16", "nf4")
    other = (SHAPE.total_params - SHAPE.linear_params) * 2
    assert full.weights_bytes == SHAPE.linear_params * 2 + other
    assert nf4.weights_bytes == int(SHAPE.linear_params * 4.5 / 8) + other
    assert nf4.activations_bytes == full.activations_bytes


def test_adapter_costs_sixteen_bytes_per_trainable_parameter():
    est = estimate_training_memory(SHAPE, 2_000_000, "bf16", "none")
    assert est.adapter_bytes == 32_000_000
    full = estimate_training_memory(SHAPE, 2_000_000, "bf16", "none", full_finetune=True)
    assert full.adapter_bytes == SHAPE.total_params * 16


def test_activations_grow_with_batch_and_sequence():
    small = estimate_training_memory(SHAPE, 0, batch_size=1, seq_len=256)
    big = estimate_training_memory(SHAPE, 0, batch_size=4, seq_len=256)
    longer = estimate_training_memory(SHAPE, 0, batch_size=1, seq_len=1024)
    assert math.isclose(big.activations_bytes / small.activations_bytes, 4, rel_tol=1e-6)
    assert longer.activations_bytes > 4 * small.activations_bytes  # attention term is quadratic
    assert small.total_bytes == small.weights_bytes + small.adapter_bytes + small.activations_bytes


def test_shape_from_a_meta_model_counts_linear_weights_without_the_head():
    model = meta_model(config_for("llama"))
    shape = ModelShape.from_model(model)
    assert shape.hidden_size == 32 and shape.num_layers == 2 and shape.num_heads == 4
    # per layer q(32x32) k,v(16x32 each, 2 kv heads) o(32x32) gate/up(64x32) down(32x64)
    per_layer = 32 * 32 * 2 + 16 * 32 * 2 + 64 * 32 * 3
    assert shape.linear_params == 2 * per_layer
    assert shape.total_params == sum(p.numel() for p in model.parameters())


def test_lora_trainable_count_on_the_meta_model_matches_the_arithmetic():
    cfg = build_config("LORA", {"r": "4", "target_modules": "q_proj, v_proj"})
    trainable, total = count_trainable(config_for("llama"), cfg)
    # q: A 4x32 + B 32x4 ; v: A 4x32 + B 16x4 ; two layers
    assert trainable == 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4))
    assert total > trainable


def test_human_bytes_uses_binary_units():
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024**3) == "3.0 GiB"


def test_automatic_precision_is_what_the_engine_picks_on_this_machine():
    import torch

    from app.services.estimate import resolve_precision

    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_precision("auto") == ("bf16" if cuda_bf16 else "fp32")
    assert resolve_precision("bf16") == "bf16"

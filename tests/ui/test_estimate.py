"""The training-memory estimate: storage widths per quantization, how the parts add up, the
activation term against what autograd really keeps, and the fit against the worker's memory.

Measured peaks on the bundled models are bench/memory.py's job (RSS is too noisy for a unit test);
here the activation arithmetic is checked against the bytes of the tensors autograd saves, which are
exact and repeatable."""

import math
from dataclasses import replace

import pytest
import torch

from app.core.options import LOSS_CHUNK_ROWS
from app.services.estimate import (
    ModelShape,
    WorkerMemory,
    base_weight_bytes,
    bits_per_weight,
    estimate_training_memory,
    fit_verdict,
    human_bytes,
    quantized_bytes,
    ram_memory,
    uses_example_attention,
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


def test_weights_are_priced_in_the_width_the_engine_stores_them():
    fp32 = estimate_training_memory(SHAPE, 1_000_000, "fp32", "none")
    bf16 = estimate_training_memory(SHAPE, 1_000_000, "bf16", "none")
    nf4 = estimate_training_memory(SHAPE, 1_000_000, "bf16", "nf4")
    assert fp32.weights_bytes == SHAPE.total_params * 4
    assert bf16.weights_bytes == SHAPE.total_params * 2  # a bf16 run stores its frozen base in bf16
    other = (SHAPE.total_params - SHAPE.linear_params) * 2  # embeddings and norms: not quantized, bf16
    assert nf4.weights_bytes == int(SHAPE.linear_params * 4.5 / 8) + other
    assert nf4.activations_bytes == bf16.activations_bytes
    # A method that trains the model's own tensors keeps them (and so the base) fp32.
    full = estimate_training_memory(SHAPE, 0, "bf16", "none", full_finetune=True)
    assert full.weights_bytes == SHAPE.total_params * 4
    assert [key for key, _ in bf16.parts()][0] == "estimate.weights.bf16"
    assert [key for key, _ in fp32.parts()][0] == "estimate.weights.full"


def test_quantized_weights_are_priced_as_tuners_stores_them():
    from tuners.quant import QuantizedLinear

    shape = replace(SHAPE, quantizable=((576, 576), (1536, 576), (192, 576)), linear_params=576 * (576 + 1536 + 192))
    for quantization, bits, dq in (("nf4-dq", 4, True), ("nf4", 4, False), ("int8", 8, False)):
        stored = sum(QuantizedLinear(torch.zeros(o, i), None, bits=bits, double_quant=dq).storage_bytes()
                     for o, i in shape.quantizable)
        assert quantized_bytes(shape.quantizable, quantization) == stored
        other = (shape.total_params - shape.linear_params) * 2
        assert base_weight_bytes(shape, "bf16", quantization) == stored + other


def test_new_adapter_weights_cost_sixteen_bytes_and_trained_base_weights_twelve():
    est = estimate_training_memory(SHAPE, 2_000_000, "fp32", "none")
    assert est.trainable_bytes == 32_000_000  # weight + gradient + two AdamW moments
    # A base weight trained in place: its weight is in weights_bytes, its two moments here, and its
    # gradient only beyond what backward frees of the activations while producing it.
    short = estimate_training_memory(SHAPE, 0, "fp32", "none", batch_size=1, seq_len=64, full_finetune=True)
    assert short.trainable_bytes == SHAPE.total_params * 12 - short.activations_bytes - short.logits_bytes
    long = estimate_training_memory(SHAPE, 0, "fp32", "none", batch_size=8, seq_len=512, full_finetune=True)
    assert long.trainable_bytes == SHAPE.total_params * 8
    assert long.weights_bytes == SHAPE.total_params * 4


def test_activations_grow_with_batch_and_sequence():
    small = estimate_training_memory(SHAPE, 0, batch_size=1, seq_len=256)
    big = estimate_training_memory(SHAPE, 0, batch_size=4, seq_len=256)
    assert math.isclose(big.activations_bytes / small.activations_bytes, 4, rel_tol=1e-6)
    assert math.isclose(big.logits_bytes / small.logits_bytes, 4, rel_tol=1e-6)
    parts = (small.weights_bytes + small.trainable_bytes + small.activations_bytes + small.logits_bytes
             + small.working_bytes)
    assert small.total_bytes == parts


def test_attention_probabilities_count_only_where_attention_has_dropout():
    with_dropout = replace(SHAPE, attention_dropout=0.1)
    short = estimate_training_memory(with_dropout, 0, batch_size=1, seq_len=256)
    longer = estimate_training_memory(with_dropout, 0, batch_size=1, seq_len=1024)
    assert longer.activations_bytes > 4 * short.activations_bytes  # quadratic in the length
    flash = [estimate_training_memory(SHAPE, 0, batch_size=1, seq_len=n).activations_bytes for n in (256, 1024)]
    assert math.isclose(flash[1] / flash[0], 4, rel_tol=1e-6)  # fused attention keeps no score matrix


def test_classification_has_no_vocabulary_sized_output():
    causal = estimate_training_memory(SHAPE, 0, "fp32", batch_size=8, seq_len=512)
    seq_cls = estimate_training_memory(SHAPE, 0, "fp32", batch_size=8, seq_len=512, task="SEQ_CLS")
    assert seq_cls.logits_bytes == 0
    # The loss scores one chunk of rows at a time: the scores, their log-softmax and its gradient.
    assert causal.logits_bytes == LOSS_CHUNK_ROWS * SHAPE.vocab_size * 12


def test_only_one_chunk_of_scores_exists_at_once():
    short = estimate_training_memory(SHAPE, 0, "bf16", batch_size=1, seq_len=256)
    long = estimate_training_memory(SHAPE, 0, "bf16", batch_size=8, seq_len=512)
    assert short.logits_bytes == 256 * SHAPE.vocab_size * 14  # fewer rows than a chunk: all of them
    assert long.logits_bytes == LOSS_CHUNK_ROWS * SHAPE.vocab_size * 14  # + the bf16 output of the head


def _saved_activation_bytes(model, batch, vocab_size: int, bf16: bool = False) -> int:
    """Bytes of the tensors autograd keeps for backward: not parameters, not the vocabulary-sized ones, and
    not the bf16 copies autocast makes of trained fp32 weights (priced with the trained weights)."""
    import torch

    params = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    weight_shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    seen: dict[int, int] = {}

    def pack(tensor):
        key = tensor.untyped_storage().data_ptr()
        weight_copy = tensor.dtype == torch.bfloat16 and tuple(tensor.shape) in weight_shapes
        if key not in params and tensor.shape[-1:] != (vocab_size,) and not weight_copy:
            seen[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(**batch)
    return sum(seen.values())


@pytest.mark.parametrize("compute", ["fp32", "bf16"])
@pytest.mark.parametrize(("family", "task", "method"), [
    ("llama", "CAUSAL_LM", {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
    ("llama", "CAUSAL_LM", {"peft_type": "FULL"}),
    ("bert", "SEQ_CLS", {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}),
    ("bert", "SEQ_CLS", {"peft_type": "FULL"}),
])
def test_activation_term_matches_what_autograd_keeps(family, task, method, compute):
    """In bf16 the model is stored as the engine stores it (frozen base in bf16) and run under autocast."""
    import torch

    import tuners
    from tests.support.tiny_models import tiny_model
    from worker.precision import store_frozen_in

    torch.manual_seed(0)
    model = tiny_model(family, task, hidden_size=64, intermediate_size=172 if family == "llama" else 256)
    shape = ModelShape.from_model(model)
    tuned = tuners.apply(model, tuners.config_from_dict({**method, "task_type": task}).for_run(10))
    if compute == "bf16":
        store_frozen_in(tuned, torch.bfloat16)
    tuned.train()
    ids = torch.randint(5, 500, (2, 96))
    labels = torch.tensor([0, 1]) if task == "SEQ_CLS" else ids.clone()
    saved = _saved_activation_bytes(tuned, {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                            "labels": labels}, shape.vocab_size, bf16=compute == "bf16")
    est = estimate_training_memory(shape, 0, compute, "none", batch_size=2, seq_len=96, task=task,
                                   trains_base_weights=method["peft_type"] == "FULL")
    assert 0.85 <= est.activations_bytes / saved <= 1.2, (est.activations_bytes, saved)


@pytest.mark.parametrize("compute", ["fp32", "bf16"])
def test_per_example_attention_keeps_what_the_estimate_adds(compute):
    """On a CPU the engine runs packed causal rows through per-example attention (worker.attention, sdpa's
    math kernel), which keeps each example's attention probabilities: the estimate's extra term is
    checked against the extra bytes autograd keeps for the same packed batch (one example per row, the
    most it keeps), against transformers' sdpa."""
    import tuners
    from tests.support.tiny_models import tiny_model
    from worker.attention import use_packed_attention, use_sdpa
    from worker.packing import REAL_TOKENS, pack_batch
    from worker.precision import store_frozen_in

    torch.manual_seed(0)
    model = tiny_model("llama", hidden_size=64, intermediate_size=172)
    shape = ModelShape.from_model(model)
    tuned = tuners.apply(model, tuners.config_from_dict(
        {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}))
    if compute == "bf16":
        store_frozen_in(tuned, torch.bfloat16)
    tuned.train()
    examples = [{"input_ids": ids, "labels": ids} for ids in torch.randint(5, 500, (2, 96)).tolist()]
    batch = {k: v for k, v in pack_batch(examples, 0, 96).items() if k != REAL_TOKENS}
    assert batch["input_ids"].shape == (2, 96)
    plain = {k: batch[k] for k in ("input_ids", "position_ids", "labels")}
    sdpa = _saved_activation_bytes(tuned, plain, shape.vocab_size, bf16=compute == "bf16")
    assert use_packed_attention(tuned.model) is None
    try:
        per_example = _saved_activation_bytes(tuned, batch, shape.vocab_size, bf16=compute == "bf16")
    finally:
        use_sdpa(tuned.model)
    assert uses_example_attention(shape, "CAUSAL_LM", "cpu")
    assert not uses_example_attention(shape, "CAUSAL_LM", "cuda")
    assert not uses_example_attention(shape, "SEQ_CLS", "cpu")
    assert not uses_example_attention(replace(shape, sliding_window=True), "CAUSAL_LM", "cpu")
    args = (shape, 0, compute, "none")
    term = (estimate_training_memory(*args, batch_size=2, seq_len=96, example_attention=True).activations_bytes
            - estimate_training_memory(*args, batch_size=2, seq_len=96).activations_bytes)
    assert 0.75 <= term / (per_example - sdpa) <= 1.25, (term, per_example - sdpa)


def test_a_sliding_window_is_read_where_the_model_uses_it():
    """One rule for the engine (keeps sdpa's mask, worker.attention) and the estimate (no per-example term)."""
    from transformers import LlamaConfig, MistralConfig

    from app.core.models import sliding_window

    assert sliding_window(MistralConfig(sliding_window=64)) == 64
    assert sliding_window(MistralConfig(sliding_window=None)) is None
    assert sliding_window(LlamaConfig()) is None


def test_the_fit_is_said_in_plain_words_against_the_workers_memory():
    from app.ui.steps.model import fit_text

    gpu = WorkerMemory("gpu", "NVIDIA <b>H200</b>", 24 * 2**30, 20 * 2**30)
    assert fit_verdict(int(2.1 * 2**30), gpu) == "fits"
    text = fit_text(int(2.1 * 2**30), gpu)
    assert "Fits:** 2.1 of 24 GiB" in text and "<b>" not in text
    assert fit_verdict(22 * 2**30, gpu) == "tight"
    assert fit_verdict(30 * 2**30, gpu) == "too_big"
    assert "Does not fit" in fit_text(30 * 2**30, gpu)
    assert "another machine" in fit_text(2**30, None)


def test_machine_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:  100 kB\nMemAvailable:    8192000 kB\n")
    mem = ram_memory(str(meminfo))
    assert mem == WorkerMemory("ram", "this machine", 16384000 * 1024, 8192000 * 1024)
    assert ram_memory(str(tmp_path / "missing")) is None


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
    from app.core.devices import bf16_supported, pick_device
    from app.services.estimate import resolve_precision

    assert resolve_precision("auto") == ("bf16" if bf16_supported(pick_device("auto")) else "fp32")
    assert resolve_precision("bf16") == "bf16"

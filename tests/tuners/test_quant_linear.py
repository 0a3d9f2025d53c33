"""The quantized linear layer and quantize_model: gradients, what it saves, what it leaves alone."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuners
from tests.support.tiny_models import batch, tiny_model
from tuners.config import ConfigError
from tuners.quant import PackedWeight, QuantizedLinear, quantized_layers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls on a shared 2-core machine run far faster without OpenMP's spinning threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VARIANTS = [
    pytest.param(dict(bits=4, double_quant=True), id="nf4-dq"),
    pytest.param(dict(bits=4, double_quant=False), id="nf4"),
    pytest.param(dict(bits=8), id="int8"),
]


def _linear(in_features=192, out_features=96, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_input_gradient_equals_plain_linear_with_dequantized_weight(kwargs):
    layer = QuantizedLinear.from_linear(_linear(), **kwargs)
    x = torch.randn(3, 5, 192, requires_grad=True)
    grad_out = torch.randn(3, 5, 96)
    layer(x).backward(grad_out)

    weight = layer.dequantize().detach()
    x_ref = x.detach().clone().requires_grad_(True)
    bias_ref = layer.bias.detach().clone().requires_grad_(True)
    out_ref = F.linear(x_ref, weight, bias_ref)
    out_ref.backward(grad_out)
    assert torch.allclose(layer(x), out_ref, atol=1e-6, rtol=0)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6, rtol=0)
    assert torch.allclose(layer.bias.grad, bias_ref.grad, atol=1e-5, rtol=0)
    assert layer.qweight.grad is None


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_backward_saves_only_the_quantized_state(kwargs):
    layer = QuantizedLinear.from_linear(_linear(bias=False), **kwargs)
    layer.requires_grad_(False)
    stored = {t.data_ptr() for t in layer.quantized_state()}
    saved = []
    x = torch.randn(4, 192, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    out.sum().backward()
    assert saved, "the custom backward must save the quantized state"
    assert all(t.data_ptr() in stored for t in saved)
    assert all(t.numel() < 96 * 192 or not t.is_floating_point() for t in saved)


def test_bf16_compute_returns_input_dtype_close_to_fp32():
    source = _linear()
    fp32 = QuantizedLinear.from_linear(source, bits=4, compute_dtype=torch.float32)
    bf16 = QuantizedLinear.from_linear(source, bits=4, compute_dtype=torch.bfloat16)
    x = torch.randn(8, 192)
    assert bf16.dequantize().dtype == torch.bfloat16
    out = bf16(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, fp32(x), atol=0.05)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_casting_the_model_keeps_the_statistics_exact(kwargs):
    layer = QuantizedLinear.from_linear(_linear(), **kwargs)
    before = layer.dequantize()
    layer.to(torch.bfloat16)
    assert all(b.dtype in (torch.float32, torch.uint8) for b in layer.buffers())
    assert torch.equal(layer.dequantize(), before)
    assert layer.bias.dtype == torch.bfloat16


def test_packed_weight_is_a_frozen_parameter_counted_as_two_per_byte():
    layer = QuantizedLinear.from_linear(_linear(), bits=4)
    assert isinstance(layer.qweight, PackedWeight) and not layer.qweight.requires_grad
    assert layer.qweight.numel() * 2 == 96 * 192
    with pytest.raises(RuntimeError):
        layer.qweight.requires_grad_(True)


@pytest.mark.parametrize("bits", [4, 8])
def test_parameter_counts_match_the_full_precision_model(bits):
    full = tuners.apply(tiny_model("llama"), tuners.LoraConfig(target_modules="all-linear"))
    quantized = tuners.apply(
        tuners.quantize(tiny_model("llama"), bits=bits), tuners.LoraConfig(target_modules="all-linear")
    )
    assert quantized.trainable_parameters() == full.trainable_parameters()


def test_quantize_model_keeps_heads_embeddings_and_norms_in_full_precision():
    model = tuners.quantize(tiny_model("llama"), bits=4)
    names = set(quantized_layers(model))
    assert names and all(n.startswith("model.layers.") for n in names)
    assert len(names) == 2 * 7
    assert type(model.lm_head) is nn.Linear
    assert type(model.model.embed_tokens) is nn.Embedding

    classifier = tuners.quantize(tiny_model("bert", "SEQ_CLS"), bits=8)
    assert type(classifier.classifier) is nn.Linear
    assert isinstance(classifier.bert.encoder.layer[0].attention.self.query, QuantizedLinear)

    t5 = tuners.quantize(tiny_model("t5", "SEQ_2_SEQ_LM"), bits=4)
    assert type(t5.encoder.block[0].layer[1].DenseReluDense.wo) is nn.Linear  # T5 keeps wo in fp32


def test_gpt2_conv1d_is_quantized_in_linear_orientation():
    model = tiny_model("gpt2")
    reference = model.transformer.h[0].attn.c_attn
    x = torch.randn(2, 32)
    expected = reference(x)
    tuners.quantize(model, bits=8)
    layer = model.transformer.h[0].attn.c_attn
    assert isinstance(layer, QuantizedLinear) and (layer.in_features, layer.out_features) == (32, 96)
    assert torch.allclose(layer(x), expected, atol=0.02)


def test_skip_keeps_named_modules_in_full_precision():
    model = tuners.quantize(tiny_model("llama"), bits=4, skip=["down_proj", "model.layers.0.self_attn.q_proj"])
    names = set(quantized_layers(model))
    assert not any(n.endswith("down_proj") for n in names)
    assert "model.layers.0.self_attn.q_proj" not in names and "model.layers.1.self_attn.q_proj" in names


def test_quantize_refuses_bad_arguments_and_adapted_models():
    with pytest.raises(ConfigError, match="bits"):
        tuners.quantize(tiny_model("llama"), bits=3)
    with pytest.raises(ConfigError, match="compute_dtype"):
        tuners.quantize(tiny_model("llama"), compute_dtype=torch.int8)
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(target_modules="attention"))
    with pytest.raises(ConfigError, match="adapters"):
        tuners.quantize(tuned.model)


def test_merging_into_a_quantized_base_is_refused():
    tuned = tuners.apply(tuners.quantize(tiny_model("llama")), tuners.LoraConfig(target_modules="attention"))
    with pytest.raises(NotImplementedError, match="quantized"):
        tuned.merge_and_unload()


def test_quantized_model_output_is_close_to_full_precision():
    model = tiny_model("llama")
    inputs = batch("llama")
    with torch.no_grad():
        reference = model(**inputs).logits
        nf4 = tuners.quantize(tiny_model("llama"), bits=4)(**inputs).logits
        int8 = tuners.quantize(tiny_model("llama"), bits=8)(**inputs).logits
    assert (int8 - reference).abs().max() < (nf4 - reference).abs().max()
    assert (nf4 - reference).abs().max() < 0.2 * reference.abs().max()

"""QLoRA / QDoRA: adapters train on a quantized base and carry over to the full-precision base."""

import pytest
import torch
from safetensors.torch import load_file

import tuners
from tests.support.tiny_models import tiny_model

# Small vocabulary and a wide init, so a frozen random head can express confident predictions.
MODEL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, initializer_range=0.3)


def _model():
    return tiny_model("llama", **MODEL)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls on a shared 2-core machine run far faster without OpenMP's spinning threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task():
    """A learnable task: every sequence follows a fixed random successor table (a bigram model)."""
    g = torch.Generator().manual_seed(0)
    successor = torch.randperm(MODEL["vocab_size"], generator=g)
    ids = torch.empty(8, 16, dtype=torch.long)
    ids[:, 0] = torch.randint(0, MODEL["vocab_size"], (8,), generator=g)
    for t in range(1, ids.shape[1]):
        ids[:, t] = successor[ids[:, t - 1]]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _train(tuned, inputs, steps=40, lr=1e-2):
    torch.manual_seed(0)
    params = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    tuned.train()
    losses = []
    for _ in range(steps):
        loss = tuned(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    tuned.eval()
    return losses


@pytest.fixture(scope="module")
def trained_qlora(tmp_path_factory):
    inputs = _task()
    base = tuners.quantize(_model(), bits=4, double_quant=True, compute_dtype=torch.bfloat16)
    tuned = tuners.apply(base, tuners.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    losses = _train(tuned, inputs)
    path = tmp_path_factory.mktemp("qlora")
    tuned.save_pretrained(path)
    return tuned, losses, path, inputs


def test_qlora_lowers_the_loss_on_a_learnable_task(trained_qlora):
    tuned, losses, _, _ = trained_qlora
    assert losses[-1] < 0.2 * losses[0]
    base_grads = [p for p in tuned.model.parameters() if not p.requires_grad and p.grad is not None]
    assert base_grads == []


def test_qlora_adapter_saves_in_the_normal_format(trained_qlora, tmp_path):
    _, _, path, _ = trained_qlora
    full = tuners.apply(_model(), tuners.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    full.save_pretrained(tmp_path)
    assert set(load_file(path / "adapter_model.safetensors")) == set(load_file(tmp_path / "adapter_model.safetensors"))


def test_qlora_adapter_on_the_full_precision_base_matches_the_quantized_model(trained_qlora):
    tuned, losses, path, inputs = trained_qlora
    full = tuners.load(_model(), path)
    with torch.no_grad():
        quantized_logits = tuned(**inputs).logits.float()
        out = full(**inputs)
        with full.disabled(), tuned.disabled():
            quantization_gap = (full(**inputs).logits - tuned(**inputs).logits.float()).abs().mean()
    gap = (out.logits - quantized_logits).abs().mean()
    agreement = (out.logits.argmax(-1) == quantized_logits.argmax(-1)).float().mean()
    assert gap < 1.5 * quantization_gap  # the adapter does not amplify the base's quantization error
    assert agreement > 0.9
    assert out.loss.item() < 0.2 * losses[0]


def test_qdora_trains_on_an_int8_base():
    inputs = _task()
    base = tuners.quantize(_model(), bits=8)
    tuned = tuners.apply(base, tuners.LoraConfig(r=4, use_dora=True, target_modules=["q_proj", "v_proj", "down_proj"]))
    magnitude = tuned.model.model.layers[0].self_attn.q_proj.lora_magnitude_vector["default"]
    expected = torch.linalg.norm(tuned.model.model.layers[0].self_attn.q_proj.base_layer.dequantize(), dim=1)
    assert torch.allclose(magnitude, expected)
    losses = _train(tuned, inputs, steps=25)
    assert losses[-1] < 0.3 * losses[0]

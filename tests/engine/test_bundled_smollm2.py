"""The bundled SmolLM2-135M end to end: GGUF converted once to safetensors, LoRA on chat pairs, reloaded.

Slow (the conversion alone takes a minute or two on 2 cores): run with ``pytest -m slow``.
"""

from __future__ import annotations

import pytest
import torch

import tuners
from app.core.models import load_model, load_tokenizer, resolve_model
from app.core.spec import RunSpec
from app.data import bundled_datasets
from worker.engine import MemoryReporter, train


@pytest.mark.slow
def test_smollm2_is_converted_once_and_a_lora_run_on_chat_pairs_learns(tmp_path):
    models = tmp_path / "models"
    data = bundled_datasets()["chatterbot"](tmp_path)
    spec = {
        "name": "smol-chat", "model": {"name": "SmolLM2-135M-Instruct"},
        "data": {"dataset": str(data), "max_length": 96, "val_fraction": 0.1, "max_rows": 120},
        "method": {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "attention"},
        "training": {"max_steps": 8, "batch_size": 4, "learning_rate": 0.002, "eval_every": 8, "seed": 0},
    }
    reporter = MemoryReporter()
    result = train(RunSpec.from_dict(spec), tmp_path / "out", reporter, models)

    folder = models / "SmolLM2-135M-Instruct"
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.gguf"))
    assert resolve_model("SmolLM2-135M-Instruct", models) == str(folder)
    evals = [p.loss for p in reporter.points if p.split == "eval"]
    assert evals[-1] < evals[0], evals

    tokenizer = load_tokenizer(str(folder))
    base = load_model(str(folder), "CAUSAL_LM", tokenizer)
    inputs = tokenizer("Hello, how are you?", return_tensors="pt")
    with torch.no_grad():
        plain = base(**inputs).logits
        tuned = tuners.load(base, result.adapter_dir)
        adapted = tuned(**inputs).logits
    assert not torch.allclose(plain, adapted)

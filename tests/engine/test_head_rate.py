"""A new classification head learns at its own rate (``training.head_learning_rate``), the adapter at the run's.

Adam's first step moves every parameter with a gradient by its group's rate (m / sqrt(v) = ±1 when the
moments start at zero), so after one step at a constant rate the largest change of each tensor *is* the
rate it learned at: the head's copy (classifier and pooler) by the head rate, LoRA's B by the run's.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from app.core.options import HEAD_LEARNING_RATE
from app.core.spec import RunSpec, SpecError
from tests.engine.helpers import save_tiny_model, write_classification_csv
from worker.engine import MemoryReporter, train


def _spec(model_dir, data, **training) -> dict:
    return {
        "name": "head-rate", "model": {"name": str(model_dir)},
        "data": {"dataset": str(data), "shape": "classification", "max_length": 32, "val_fraction": 0.25},
        "method": {"peft_type": "LORA", "r": 4, "target_modules": ["query", "value"]},
        "training": {"max_steps": 1, "batch_size": 8, "scheduler": "constant", "eval_every": 0, "seed": 0,
                     "bf16": False, **training},
    }


@pytest.fixture(scope="module")
def bert_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("head-rate")
    bert = save_tiny_model(root / "bert", "bert", "SEQ_CLS")
    words = [("bad", "fine", "good")[i % 3] for i in range(18)]  # three labels, as the tiny model's head has
    data = write_classification_csv(root / "reviews.csv", [(f"{w} film " * (1 + i % 2), w) for i, w in enumerate(words)])
    return bert, data


def _largest_changes(result, model_dir) -> dict[str, float]:
    base = load_file(str(model_dir / "model.safetensors"))
    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    out = {}
    for key, value in saved.items():
        name = key.removeprefix("base_model.model.")
        start = base[name] if name in base else torch.zeros_like(value)  # LoRA's B starts at zero
        out[name] = (value.float() - start.float()).abs().max().item()
    return out


@pytest.mark.parametrize("head_lr", [None, 3e-2])
def test_the_head_learns_at_its_rate_and_the_adapter_at_the_runs(bert_and_data, tmp_path, head_lr):
    model_dir, data = bert_and_data
    rate = {} if head_lr is None else {"head_learning_rate": head_lr}
    spec = RunSpec.from_dict(_spec(model_dir, data, learning_rate=1e-4, **rate))
    result = train(spec, tmp_path / "out", MemoryReporter(), tmp_path / "models")
    changes = _largest_changes(result, model_dir)
    head = HEAD_LEARNING_RATE if head_lr is None else head_lr
    heads = {n: c for n, c in changes.items() if n.startswith(("classifier.", "bert.pooler."))}
    assert set(heads) == {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    for name, change in heads.items():
        assert change == pytest.approx(head, rel=0.01), name
    lora_b = {n: c for n, c in changes.items() if "lora_B" in n}
    assert lora_b and all(c == pytest.approx(1e-4, rel=0.01) for c in lora_b.values()), lora_b


def test_a_bad_head_rate_names_the_field(bert_and_data):
    model_dir, data = bert_and_data
    with pytest.raises(SpecError, match="training.head_learning_rate"):
        RunSpec.from_dict(_spec(model_dir, data, head_learning_rate=-1))

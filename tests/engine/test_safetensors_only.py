"""Model weights are read from safetensors only: a folder with only pickled weights is refused by the
model check and by the engine's loader with the same words and the way out, before anything unpickles."""

from __future__ import annotations

import pytest
import torch

from app.core.models import ModelError, load_model
from app.services.model_info import ModelNotFound, describe_model
from tests.engine.helpers import save_tiny_model


@pytest.fixture
def pickled_folder(tmp_path):
    folder = save_tiny_model(tmp_path / "pickled")
    weights = next(folder.glob("*.safetensors"))
    from safetensors.torch import load_file

    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    return folder


def test_the_model_check_refuses_pickled_weights_and_says_how_to_convert(pickled_folder):
    with pytest.raises(ModelNotFound) as refused:
        describe_model(str(pickled_folder))
    message = str(refused.value)
    assert "holds only pickled PyTorch weights (pytorch_model.bin)" in message
    assert "save_pretrained" in message and "weights_only" not in message


def test_the_engine_loader_refuses_them_with_the_same_words(pickled_folder, monkeypatch):
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or {})
    with pytest.raises(ModelError) as refused:
        load_model(str(pickled_folder), "CAUSAL_LM", tokenizer=None)
    with pytest.raises(ModelNotFound) as checked:
        describe_model(str(pickled_folder))
    assert str(refused.value) == str(checked.value)
    assert unpickled == []


def test_a_folder_with_safetensors_still_loads(tmp_path):
    folder = save_tiny_model(tmp_path / "safe")
    (folder / "training_args.bin").write_bytes(b"not weights, but a pickle all the same")
    assert load_model(str(folder), "CAUSAL_LM", tokenizer=None) is not None

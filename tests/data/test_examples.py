"""The engine's contract with the prepared splits: len, index, slices, batches, over Arrow files."""

from __future__ import annotations

import json

import pytest
import torch

from app.data import ExampleSet, PrepareOptions, prepare, read_table
from tests.support.tiny_models import tokenizer
from worker.engine import collate

PC = {"prompt": "prompt", "completion": "completion"}


@pytest.fixture(params=["memory", "folder"])
def ready(request, tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Question {i}:" + " more" * (i % 7), "completion": f" answer {i}"})
                              for i in range(30)) + "\n")
    folder = tmp_path / "prepared" if request.param == "folder" else None
    if folder is not None:
        folder.mkdir()
    return prepare(read_table(path), "prompt_completion", PC, tokenizer("llama"),
                   PrepareOptions(max_length=64, val_fraction=0.2), folder=folder)


def test_a_split_reads_like_a_list_of_example_dicts(ready):
    train = ready.train
    assert isinstance(train, ExampleSet) and len(train) == 24
    as_list = list(train)
    assert len(as_list) == 24 and set(as_list[0]) == {"input_ids", "attention_mask", "labels"}
    assert train[0] == as_list[0] and train[-1] == as_list[-1]
    assert train[3:7] == as_list[3:7] and train[::5] == as_list[::5]
    assert train.take([5, 2, 5]) == [as_list[5], as_list[2], as_list[5]]
    assert train.lengths() == [len(e["input_ids"]) for e in as_list]
    assert train + ready.eval == as_list + list(ready.eval)
    with pytest.raises(IndexError):
        train[24]


def test_collate_takes_a_slice_of_a_split(ready):
    batch = collate(ready.train[0:4], pad_id=0)
    lengths = [len(e["input_ids"]) for e in ready.train[0:4]]
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["labels"].dtype == torch.int64


def test_the_dataset_behind_a_split_gives_tensors(ready):
    tensors = ready.train.dataset.with_format("torch")[0]
    assert tensors["input_ids"].tolist() == ready.train[0]["input_ids"]

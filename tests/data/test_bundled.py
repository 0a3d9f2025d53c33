"""The offline demo datasets come out as ordinary files the readers and detector understand."""

from __future__ import annotations

import pytest

from app.data import PrepareOptions, bundled_datasets, detect_shape, prepare, read_table
from app.data.bundled import sentiment_of
from tests.support.tiny_models import tokenizer


def test_drug_reviews_are_three_class_sentiment(tmp_path):
    path = bundled_datasets()["drug-reviews"](tmp_path)
    assert path.parent == tmp_path and path.suffix == ".tsv"
    table = read_table(path)
    found = detect_shape(table)
    assert (found.shape, found.mapping) == ("classification", {"text": "review", "label": "label"})
    assert 500 <= len(table.rows) <= 2000
    assert {r["label"] for r in table.rows} == {"negative", "neutral", "positive"}
    assert not any("&#039;" in r["review"] for r in table.rows)
    ready = prepare(table, found.shape, found.mapping, tokenizer("bert"),
                    PrepareOptions(task="SEQ_CLS", max_length=64, val_fraction=0.1))
    assert ready.label_names == ["negative", "neutral", "positive"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("rating,label", [("1", "negative"), ("4", "negative"), ("5", "neutral"), ("6", "neutral"),
                                          ("7", "positive"), ("10", "positive"), ("positive", "positive"),
                                          ("n/a", None)])
def test_ratings_map_to_sentiment(rating, label):
    assert sentiment_of(rating) == label


def test_chatterbot_is_chat_jsonl(tmp_path):
    path = bundled_datasets()["chatterbot"](tmp_path)
    table = read_table(path)
    found = detect_shape(table)
    assert (found.shape, found.mapping, found.ignored_columns) == ("chat", {"messages": "messages"}, ["category"])
    assert len(table.rows) > 500
    greeting = next(r for r in table.rows if r["category"] == "greetings")
    assert greeting["messages"] == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]
    first_rows = read_table(path, name="chatterbot.jsonl")
    first_rows.rows = first_rows.rows[:50]
    ready = prepare(first_rows, "chat", {"messages": "messages"}, tokenizer("llama"),
                    PrepareOptions(max_length=128, val_fraction=0))
    assert len(ready.train) == 50

"""Properties: valid rows survive read -> map -> prepare intact; arbitrary bytes only ever give DataError."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.data import IGNORE, DataError, PrepareOptions, Table, detect_shape, prepare, read_table
from tests.support.tiny_models import tokenizer

PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a person might type, including delimiters, quotes, line breaks and non-ASCII; no control bytes,
# and only assigned characters (the SmolLM2 tokenizer itself cannot round-trip unassigned code points).
text = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cc", "Cs", "Cn", "Co"), max_codepoint=0x2FFFF),
        st.sampled_from(',;\t"\'\n'),
    ),
    min_size=1, max_size=40,
).filter(lambda s: s.strip() and "<|" not in s)

pairs = st.lists(st.fixed_dictionaries({"prompt": text, "completion": text}), min_size=1, max_size=6)


def write(folder: Path, fmt: str, rows: list[dict]) -> Path:
    path = folder / f"data.{fmt}"
    if fmt in ("csv", "tsv"):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter="," if fmt == "csv" else "\t",
                                quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(out.getvalue(), encoding="utf-8", newline="")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@PROPERTY
@given(rows=pairs, fmt=st.sampled_from(["csv", "tsv", "jsonl", "json", "parquet"]))
def test_prompt_completion_rows_round_trip(rows, fmt):
    tok = tokenizer("llama")
    with tempfile.TemporaryDirectory() as folder:
        table = read_table(write(Path(folder), fmt, rows))
    assert table.rows == rows
    found = detect_shape(table)
    assert (found.shape, found.mapping) == ("prompt_completion", {"prompt": "prompt", "completion": "completion"})
    ready = prepare(table, found.shape, found.mapping, tok, PrepareOptions(max_length=4096, val_fraction=0))
    assert len(ready.train) == len(rows)
    for row, ex in zip(rows, ready.train):
        assert tok.decode(ex["input_ids"]) == row["prompt"] + row["completion"] + tok.eos_token
        trained = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE]
        assert tok.decode(trained) == row["completion"] + tok.eos_token


conversations = st.lists(
    st.lists(st.tuples(text, text), min_size=1, max_size=3).map(
        lambda turns: {"messages": [m for u, a in turns for m in (
            {"role": "user", "content": u}, {"role": "assistant", "content": a})]}
    ),
    min_size=1, max_size=4,
)


@PROPERTY
@given(rows=conversations)
def test_chat_rows_train_on_exactly_the_answers(rows):
    tok = tokenizer("llama")
    with tempfile.TemporaryDirectory() as folder:
        table = read_table(write(Path(folder), "jsonl", rows))
    assert table.rows == rows
    ready = prepare(table, "chat", {"messages": "messages"}, tok, PrepareOptions(max_length=8192, val_fraction=0))
    for row, ex in zip(rows, ready.train):
        spans, current = [], []
        for t, label in zip(ex["input_ids"], ex["labels"]):
            if label == IGNORE:
                if current:
                    spans.append(tok.decode(current))
                current = [] if label == IGNORE else current
            else:
                current.append(t)
        if current:
            spans.append(tok.decode(current))
        answers = [m["content"] + "<|im_end|>\n" for m in row["messages"] if m["role"] == "assistant"]
        assert "".join(spans) == "".join(answers)


@PROPERTY
@given(data=st.binary(max_size=3000), suffix=st.sampled_from(
    [".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".zip", ""]))
def test_random_bytes_never_crash_the_reader(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            table = read_table(path)
        except DataError as e:
            assert e.code and str(e)
            return
    assert isinstance(table, Table) and table.rows and table.columns
    detect_shape(table)


@PROPERTY
@given(data=st.binary(min_size=1, max_size=400))
def test_random_bytes_inside_a_zip_never_crash_the_reader(data):
    import zipfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("inner.jsonl", data)
        try:
            read_table(path)
        except DataError as e:
            assert e.code

"""Formats and encodings people actually upload read into the same rows."""

from __future__ import annotations

import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.data import read_table

ROWS = [{"text": "Café, \"quoted\"\nand multi-line", "label": "pos"}, {"text": "plain", "label": "neg"}]


def csv_text(delimiter: str) -> str:
    quoted = '"Café, ""quoted""\nand multi-line"'
    return f"text{delimiter}label\n{quoted}{delimiter}pos\nplain{delimiter}neg\n"


@pytest.mark.parametrize(
    "name,content,fmt",
    [
        ("comma.csv", csv_text(","), "csv"),
        ("semicolon.csv", csv_text(";"), "csv"),
        ("tabs.tsv", csv_text("\t"), "tsv"),
        ("tabs-named.csv", csv_text("\t"), "csv"),
        ("records.json", json.dumps(ROWS, indent=2), "json"),
        ("columns.json", json.dumps({"text": [r["text"] for r in ROWS], "label": [r["label"] for r in ROWS]}), "json"),
        ("wrapped.json", json.dumps({"data": ROWS}), "json"),
        ("lines.jsonl", "\n".join(json.dumps(r) for r in ROWS) + "\n\n", "jsonl"),
        ("lines-named.json", "\n".join(json.dumps(r) for r in ROWS), "jsonl"),
        ("no-extension", csv_text(","), "csv"),
    ],
)
def test_text_formats_give_the_same_rows(tmp_path, name, content, fmt):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    table = read_table(path)
    assert table.fmt == fmt
    assert table.columns == ["text", "label"]
    assert table.rows == ROWS


@pytest.mark.parametrize(
    "encoding,expected",
    [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"),
     ("latin-1", "latin-1")],
)
def test_encodings_are_detected(tmp_path, encoding, expected):
    path = tmp_path / "enc.csv"
    path.write_bytes(csv_text(",").encode(encoding))
    table = read_table(path)
    assert table.encoding == expected
    assert table.rows == ROWS


def test_encoding_can_be_chosen(tmp_path):
    path = tmp_path / "enc.txt"
    path.write_bytes("naïve\n".encode("latin-1"))
    assert read_table(path, encoding="latin-1").rows == [{"text": "naïve"}]
    assert read_table(path, encoding="ISO-8859-1").encoding == "latin-1"


def test_parquet_is_read_with_plain_values(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1], "tags": [["x"], []]}), path)
    table = read_table(path)
    assert table.rows == [{"text": "a", "label": 0, "tags": ["x"]}, {"text": "b", "label": 1, "tags": []}]
    assert table.fmt == "parquet"


def test_parquet_inside_a_zip(tmp_path):
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": ["a", "b"]}), buf)
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("d.parquet", buf.getvalue())
    assert read_table(path).rows == [{"text": "a"}, {"text": "b"}]


def test_txt_one_example_per_line(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("first\nsecond\r\nthird")
    table = read_table(path)
    assert table.rows == [{"text": "first"}, {"text": "second"}, {"text": "third"}]
    assert table.lines == [1, 2, 3]


def test_txt_blank_line_separated_examples(tmp_path):
    path = tmp_path / "paras.txt"
    path.write_text("\nA1\nA2\n\n\nB1\n")
    table = read_table(path)
    assert table.rows == [{"text": "A1\nA2"}, {"text": "B1"}]
    assert table.lines == [2, 6]


def test_rows_remember_their_lines(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('text,label\n"two\nlines",a\n\nnext,b\n')
    table = read_table(path)
    assert table.lines == [2, 5]


def test_display_name_picks_format_and_appears_in_messages(tmp_path):
    path = tmp_path / "upload-1234"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    table = read_table(path, name="mine.jsonl")
    assert (table.source, table.fmt) == ("mine.jsonl", "jsonl")


def test_large_json_array_streams_across_chunks(tmp_path):
    rows = [{"text": "x" * 1000 + str(i), "n": i} for i in range(3000)]  # ~3 MB, several read chunks
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows, indent=1))
    table = read_table(path)
    assert table.rows == rows
    assert table.lines[1] == 6

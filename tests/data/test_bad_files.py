"""Every bad input the studio must refuse: the stable code, and where the message points."""

from __future__ import annotations

import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.data import DataError, Limits, read_table, validate_mapping


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


CHAT_OUT_OF_ORDER = json.dumps(
    {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                  {"role": "assistant", "content": "c"}]}
)
GOOD_CHAT = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})

# (case, file name, bytes, read options, (shape, mapping) to validate or None, code, expected location)
BAD_CASES = [
    ("empty-file", "empty.csv", b"", {}, None, "empty_file", {}),
    ("whitespace-only", "blank.jsonl", b"\n  \n", {}, None, "empty_file", {}),
    ("header-only-csv", "head.csv", b"text,label\n", {}, None, "header_only", {}),
    ("header-only-parquet", "head.parquet",
     parquet_bytes(pa.table({"text": pa.array([], pa.string())})), {}, None, "header_only", {}),
    ("binary-file", "data.csv", bytes(range(256)) * 4, {}, None, "binary_file", {}),
    ("wrong-encoding-chosen", "latin.csv", "text,label\ncafé,1\n".encode("latin-1"), {"encoding": "utf-8"}, None,
     "bad_encoding", {"line": 2}),
    ("malformed-jsonl-line", "bad.jsonl", b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n', {}, None,
     "malformed_jsonl", {"line": 2}),
    ("jsonl-line-not-an-object", "list.jsonl", b'{"text": "a"}\n["b"]\n', {}, None, "not_records", {"line": 2}),
    ("malformed-json-array", "bad.json", b'[\n {"text": "a"},\n {"text": "b"}\n {"text": "c"}\n]', {}, None,
     "malformed_json", {"line": 4}),
    ("inconsistent-csv-columns", "ragged.csv", b"text,label\na,1\nb,2,extra\n", {}, None, "inconsistent_columns",
     {"line": 3, "row": 2}),
    ("inconsistent-json-columns", "cols.json", b'{"text": ["a", "b"], "label": [1]}', {}, None,
     "inconsistent_columns", {"field": "label"}),
    ("unclosed-quote-csv", "quote.csv", b'text,label\n"a,1\nb,2\n', {}, None, "malformed_csv", {}),
    ("missing-mapped-column", "c.csv", b"text,label\na,x\nb,y\n", {},
     ("classification", {"text": "review", "label": "label"}), "missing_column", {"field": "review"}),
    ("null-field-jsonl", "n.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": null, "completion": "c"}\n', {},
     ("prompt_completion", {"prompt": "prompt", "completion": "completion"}), "empty_field",
     {"line": 2, "row": 2, "field": "prompt"}),
    ("empty-field-csv", "e.csv", b"text,label\na,x\n  ,y\n", {}, ("classification", {"text": "text", "label": "label"}),
     "empty_field", {"line": 3, "row": 2, "field": "text"}),
    ("one-class-labels", "one.csv", b"text,label\na,spam\nb,spam\n", {},
     ("classification", {"text": "text", "label": "label"}), "one_class", {"field": "label"}),
    ("chat-turns-out-of-order", "chat.jsonl", (GOOD_CHAT + "\n" + CHAT_OUT_OF_ORDER + "\n").encode(), {},
     ("chat", {"messages": "messages"}), "chat_order", {"line": 2, "row": 2, "field": "messages[1].role"}),
    ("chat-ends-with-user", "chat.jsonl",
     json.dumps({"messages": [{"role": "user", "content": "a"}]}).encode(), {},
     ("chat", {"messages": "messages"}), "chat_order", {"line": 1, "row": 1, "field": "messages"}),
    ("chat-unknown-role", "chat.jsonl",
     json.dumps({"messages": [{"role": "robot", "content": "a"}]}).encode(), {},
     ("chat", {"messages": "messages"}), "bad_field", {"row": 1, "field": "messages[0].role"}),
    ("file-over-size-limit", "big.csv", b"text,label\n" + b"abc,1\n" * 100, {"limits": Limits(max_bytes=100)}, None,
     "too_large", {}),
    ("too-many-rows", "rows.jsonl", b'{"text": "a"}\n' * 6, {"limits": Limits(max_rows=5)}, None, "too_many_rows",
     {"line": 6}),
    ("line-too-long", "long.txt", b"short\n" + b"x" * 200 + b"\n", {"limits": Limits(max_line_chars=100)}, None,
     "line_too_long", {"line": 2}),
    ("zip-with-several-data-files", "two.zip", zipped({"a.csv": b"text\nx\n", "b.csv": b"text\ny\n"}), {}, None,
     "zip_multiple", {}),
    ("zip-with-no-data-file", "none.zip", zipped({"readme.md": b"hi"}), {}, None, "zip_no_data", {}),
    ("zip-path-escaping-folder", "evil.zip", zipped({"../../etc/data.csv": b"text\nx\n"}), {}, None,
     "zip_unsafe_path", {"field": "../../etc/data.csv"}),
    ("zip-that-is-not-a-zip", "fake.zip", b"PK\x03\x04 not really", {}, None, "bad_zip", {}),
    ("parquet-that-is-not-parquet", "fake.parquet", b"PAR1 garbage garbage", {}, None, "bad_parquet", {}),
    ("spreadsheet", "sheet.xlsx", b"PK\x03\x04", {}, None, "unsupported_format", {}),
    ("too-many-columns-csv", "wide.csv", b"\n" + b",".join([b"c"] * 11) + b"\n" + b",".join([b"1"] * 11) + b"\n",
     {"limits": Limits(max_columns=10)}, None, "too_many_columns", {"line": 2}),
    ("too-many-columns-jsonl", "wide.jsonl",
     b'{"a": 1}\n' + json.dumps({f"k{i}": i for i in range(11)}).encode() + b"\n",
     {"limits": Limits(max_columns=10)}, None, "too_many_columns", {"line": 2}),
    ("too-many-columns-json-object", "wide.json", json.dumps({f"k{i}": [i] for i in range(11)}).encode(),
     {"limits": Limits(max_columns=10)}, None, "too_many_columns", {}),
    ("too-many-columns-parquet", "wide.parquet", parquet_bytes(pa.table({f"k{i}": [i] for i in range(11)})),
     {"limits": Limits(max_columns=10)}, None, "too_many_columns", {}),
]


@pytest.mark.parametrize(
    "name,content,options,mapping,code,where", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_input_is_refused_with_code_and_location(tmp_path, name, content, options, mapping, code, where):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        table = read_table(path, **options)
        assert mapping is not None, f"read {name} without complaint"
        validate_mapping(table, *mapping)
    error = caught.value
    assert error.code == code, str(error)
    assert error.file == name
    assert name in str(error)
    for key, value in where.items():
        assert getattr(error, key) == value, f"{key}: {getattr(error, key)!r} in {error}"
        if key in ("line", "row"):
            assert f"{key} {value}" in str(error)
        if key == "field":
            assert f"'{value}'" in str(error)


def test_zip_with_one_data_file_is_read_through(tmp_path):
    path = tmp_path / "one.zip"
    path.write_bytes(zipped({"__MACOSX/._data.csv": b"junk", "folder/data.csv": b"text,label\nhi,1\nyo,2\n"}))
    table = read_table(path)
    assert table.rows == [{"text": "hi", "label": "1"}, {"text": "yo", "label": "2"}]
    assert table.fmt == "zip/csv"
    assert table.source == "one.zip/folder/data.csv"


def test_a_row_error_in_a_zip_names_the_inner_file(tmp_path):
    path = tmp_path / "one.zip"
    path.write_bytes(zipped({"data.jsonl": b'{"a": 1}\n{oops}\n'}))
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert (caught.value.code, caught.value.file, caught.value.line) == ("malformed_jsonl", "one.zip/data.jsonl", 2)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as caught:
        read_table(tmp_path / "nope.csv")
    assert caught.value.code == "file_not_found"


def test_repeated_header_names_get_numbered_in_one_pass(tmp_path):
    """20,000 identical header cells once took 52 s (each name re-tried every earlier suffix)."""
    path = tmp_path / "same.csv"
    n = 20_000
    path.write_text(",".join(["x"] * n) + "\n" + ",".join(["1"] * n) + "\n")
    table = read_table(path, limits=Limits(max_columns=n))
    assert table.columns == ["x"] + [f"x_{k}" for k in range(2, n + 1)]


def test_numbered_names_never_collide_with_given_ones(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("a,a_2,a,,a,column_4\n1,2,3,4,5,6\n")
    assert read_table(path).columns == ["a", "a_2", "a_3", "column_4", "a_4", "column_4_2"]


def test_the_default_column_limit_is_a_thousand(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(1001)) + "\n" + ",".join(["1"] * 1001) + "\n")
    with pytest.raises(DataError, match="1,001 columns, more than the 1,000 allowed"):
        read_table(path)

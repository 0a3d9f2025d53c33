"""Rows stream from the readers into Arrow files; the checks on them are the checks on a Table."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from app.data import DataError, detect_shape, read_table
from app.data.readers import stream_table
from app.data.records import check_records
from app.data.shapes import normalise_rows
from app.data.store import write_rows


def write_jsonl(path, records, tail: str = ""):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" + tail, encoding="utf-8")
    return path


def test_the_stream_hands_on_rows_before_it_reaches_a_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(5)], tail='{"text": "x"\n')
    seen = []
    with pytest.raises(DataError) as caught:
        for line, row in stream_table(path):
            seen.append((line, row["text"]))
    assert seen == [(i + 1, f"row {i}") for i in range(5)]
    assert (caught.value.code, caught.value.line) == ("malformed_jsonl", 6)
    with pytest.raises(DataError) as again:
        read_table(path)
    assert str(again.value) == str(caught.value)


def test_json_keys_that_come_late_are_columns_and_read_as_null(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b", "label": 1}])
    stream = stream_table(path)
    rows = [row for _, row in stream]
    assert stream.columns == ["text", "label"]
    assert rows == [{"text": "a"}, {"text": "b", "label": 1}]
    assert read_table(path).rows == [{"text": "a", "label": None}, {"text": "b", "label": 1}]


def test_txt_paragraphs_and_lines_stream_as_they_read(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\none\ntwo\n", encoding="utf-8")
    assert [(n, r["text"]) for n, r in stream_table(lines)] == [(2, "one"), (3, "two")]
    paragraphs = tmp_path / "paras.txt"
    paragraphs.write_text("one\nmore\n\n\ntwo\n", encoding="utf-8")
    assert [(n, r["text"]) for n, r in stream_table(paragraphs)] == [(1, "one\nmore"), (5, "two")]


def test_stored_rows_read_back_as_the_table_does(tmp_path):
    records = [{"text": "good film", "label": "pos", "score": 1.5}, {"text": "bad", "label": 0},
               {"text": "ok", "label": True, "extra": [1, {"a": None}]}]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    table = read_table(path)
    stored = write_rows(stream_table(path), tmp_path / "rows.arrow")
    assert [f["filename"] for f in stored.dataset.cache_files] == [str(tmp_path / "rows.arrow")]  # memory-mapped
    assert (stored.columns, stored.source, stored.fmt, stored.encoding) == (
        table.columns, table.source, table.fmt, table.encoding)
    assert list(stored.rows) == records
    assert stored.rows[1:3] == records[1:3] and stored.rows[2] == records[2]
    assert [stored.line_of(i) for i in range(3)] == [1, 2, 3]
    assert detect_shape(stored) == detect_shape(table)


def test_max_rows_keeps_the_first_rows_but_checks_the_whole_file(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": str(i)} for i in range(10)])
    stored = write_rows(stream_table(path), None, max_rows=3)
    assert [r["text"] for r in stored.rows] == ["0", "1", "2"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": str(i)} for i in range(10)], tail="[1]\n")
    with pytest.raises(DataError) as caught:
        write_rows(stream_table(bad), tmp_path / "rows.arrow", max_rows=3)
    assert (caught.value.code, caught.value.line) == ("not_records", 11)
    assert not (tmp_path / "rows.arrow").exists()


def test_records_check_refuses_what_normalise_rows_refuses(tmp_path):
    good = {"prompt": "p", "completion": "c"}
    path = write_jsonl(tmp_path / "d.jsonl", [good, good, {"prompt": "p", "completion": None}])
    mapping = {"prompt": "prompt", "completion": "completion"}
    with pytest.raises(DataError) as expected:
        normalise_rows(read_table(path), "prompt_completion", mapping)
    stored = write_rows(stream_table(path), tmp_path / "rows.arrow")
    with pytest.raises(DataError) as caught:
        check_records(stored, "prompt_completion", mapping, tmp_path / "records.arrow")
    assert caught.value.to_dict() == expected.value.to_dict()
    assert (caught.value.line, caught.value.row, caught.value.field) == (3, 3, "completion")
    assert not (tmp_path / "records.arrow").exists()


def test_one_class_is_refused_after_the_whole_file(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    stored = write_rows(stream_table(path), None)
    with pytest.raises(DataError) as caught:
        check_records(stored, "classification", {"text": "text", "label": "label"}, None)
    assert caught.value.code == "one_class"


def test_streaming_into_arrow_needs_no_more_memory_for_a_larger_file(tmp_path):
    row = {"instruction": "word " * 40, "input": "", "output": "answer " * 100}

    def peak(action) -> int:
        tracemalloc.start()
        try:
            action()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def peaks(rows: int) -> tuple[int, int]:
        path = write_jsonl(tmp_path / f"{rows}.jsonl", [row] * rows)
        streamed = peak(lambda: write_rows(stream_table(path), tmp_path / f"{rows}.arrow", batch_bytes=256 << 10))
        return streamed, peak(lambda: read_table(path))

    write_rows(stream_table(write_jsonl(tmp_path / "warm.jsonl", [row])), None)  # imports done before measuring
    small_streamed, small_whole = peaks(2000)
    large_streamed, large_whole = peaks(8000)
    assert large_whole > 3 * small_whole  # a Table holds every row as Python objects
    assert large_streamed < 1.25 * small_streamed, (small_streamed, large_streamed)  # a batch, not the file

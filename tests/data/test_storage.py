"""The one upload store: content-addressed under the store folder, safe names, atomic, size-bounded."""

from __future__ import annotations

import pytest

from app.data import DataError, file_sha256, store_upload


def test_an_upload_is_copied_whole_under_its_digest_and_a_safe_name(tmp_path):
    source = tmp_path / "in" / "tmp123"
    source.parent.mkdir()
    source.write_text("text,label\na,1\nb,2\n")
    digest = file_sha256(source)
    store = tmp_path / "store"
    stored = store_upload(source, store, sha256=digest, name="../../My Reviews.csv", max_bytes=1000)
    assert stored == store / digest[:16] / "My_Reviews.csv"
    assert stored.read_bytes() == source.read_bytes()
    assert [p.name for p in stored.parent.iterdir()] == ["My_Reviews.csv"]  # no temporary file left
    again = store_upload(source, store, sha256=digest, name="My Reviews.csv", max_bytes=1000)
    assert again == stored


def test_a_copy_over_the_limit_leaves_nothing_behind(tmp_path):
    source = tmp_path / "big.csv"
    source.write_bytes(b"text\n" + b"x" * 3_000_000)  # more than two 1 MiB chunks, so the bound trips mid-copy
    store = tmp_path / "store"
    with pytest.raises(DataError) as caught:
        store_upload(source, store, sha256=file_sha256(source), name="big.csv", max_bytes=2_000_000)
    assert caught.value.code == "too_large" and "big.csv" in str(caught.value)
    assert not store.exists() or not any(store.rglob("*"))


def test_names_and_digests_cannot_lead_out_of_the_store(tmp_path):
    source = tmp_path / "a.csv"
    source.write_text("text\nx\n")
    store = tmp_path / "store"
    for name in ("..", "/etc/passwd", "..\\..\\win.ini", ".hidden"):
        stored = store_upload(source, store, sha256=file_sha256(source), name=name, max_bytes=100)
        assert stored.parent.parent == store.resolve(), stored
        assert not stored.name.startswith(".")
    with pytest.raises(ValueError, match="not a sha256"):
        store_upload(source, store, sha256="../../" + "0" * 58, name="a.csv", max_bytes=100)

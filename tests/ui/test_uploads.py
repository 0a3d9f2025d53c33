"""Gradio's temporary copy of an upload is gone once the data step has stored or refused the file,
while Next still goes on (stored) or repeats the refusal (refused); nothing outside Gradio's upload
folder is ever removed."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import pytest

from app.core.settings import Settings
from app.services import list_datasets
from app.services.context import Context
from app.ui import uploads
from app.ui.steps import data as data_step


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


@pytest.fixture
def gradio_temp(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "gradio-temp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


def gradio_upload(folder: Path, name: str, content: bytes) -> Path:
    """Where Gradio's upload route puts a file: ``<temp dir>/<sha>/<name>``."""
    path = folder / hashlib.sha1(content).hexdigest() / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def box_text(box: str) -> str:
    return html.unescape(re.fullmatch(r"<div class='ts-error' id='data-error'>(.*)</div>", box, re.S)[1])


def test_a_stored_upload_leaves_no_temp_copy_and_next_goes_on(ctx, gradio_temp):
    content = b"text,label\ngreat,pos\nawful,neg\n"
    temp = gradio_upload(gradio_temp, "reviews.csv", content)

    ref, refusal = data_step.register(ctx, *data_step.uploaded_file({"path": str(temp), "orig_name": "my reviews.csv"}))

    assert refusal is None and ref == f"dataset:{list_datasets(ctx)[0].id}"
    assert not temp.exists() and not temp.parent.exists() and gradio_temp.is_dir()
    stored = list_datasets(ctx)[0]
    assert stored.name == "my reviews.csv" and Path(stored.path).read_bytes() == content
    assert data_step.next_from_data(ref, refusal) == (ref, None)


def test_a_refused_upload_leaves_no_temp_copy_and_next_repeats_the_refusal(ctx, gradio_temp):
    temp = gradio_upload(gradio_temp, "reviews.csv", b"text,label\n")

    ref, refusal = data_step.register(ctx, str(temp), "reviews.csv")

    assert ref is None and "no data rows" in refusal
    assert not temp.exists() and list(gradio_temp.iterdir()) == []
    assert list_datasets(ctx) == []
    shown = data_step.upload_shown(ref, refusal)
    assert shown["data.ref"] is None and box_text(shown["data.status"]) == refusal
    next_ref, box = data_step.next_from_data(None, refusal)
    assert next_ref is None and box_text(box) == refusal  # the upload's words, not "upload a file"
    assert "Upload a file" in box_text(data_step.next_from_data(None, None)[1])


def test_only_files_inside_gradios_upload_folder_are_removed(tmp_path, gradio_temp):
    outside = tmp_path / "mine.csv"
    outside.write_text("text,label\na,b\n", encoding="utf-8")
    assert uploads.discard(outside) is False and outside.is_file()
    assert uploads.discard(gradio_temp / ".." / "mine.csv") is False and outside.is_file()
    link = gradio_temp / "abc" / "link.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    assert uploads.discard(link) is False and outside.is_file()
    assert uploads.discard(None) is False

    shared = gradio_upload(gradio_temp, "a.csv", b"x")
    (shared.parent / "b.csv").write_bytes(b"y")  # another upload of the same folder still on its way
    assert uploads.discard(shared) is True
    assert not shared.exists() and (shared.parent / "b.csv").is_file()


def test_a_file_from_elsewhere_is_registered_and_kept(ctx, tmp_path, gradio_temp):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngreat,pos\nawful,neg\n", encoding="utf-8")
    ref, refusal = data_step.register(ctx, str(path), "reviews.csv")
    assert ref and refusal is None and path.is_file()

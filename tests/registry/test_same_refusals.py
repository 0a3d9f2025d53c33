"""`tunestudio datasets add` and the studio's data step refuse the same files, in the same words.

Every bad-file fixture of tests/data/test_bad_files.py goes through both doors: the CLI as a person
runs it (the installed ``tunestudio`` in a subprocess with its own TUNESTUDIO_HOME) and the data
step (its upload service ``register_upload``, and the page's own upload and Next callbacks). Both
must give the same message, and a refusal must leave no registered dataset and no stored file.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from app.core.settings import Settings
from app.data import DataError, Limits
from app.services import Context, list_datasets
from app.services.data_preview import register_upload
from tests.data.test_bad_files import BAD_CASES, parquet_bytes

DEFAULT = Limits()
TUNESTUDIO = Path(sys.executable).with_name("tunestudio")

# The fixtures bound rows, line length and columns with small custom Limits; the studio has only its
# default bounds for those, so the same bad file is made over the default bound instead.
OVER_DEFAULT_LIMITS = {
    "too-many-rows": b'{"text": "a"}\n' * (DEFAULT.max_rows + 1),  # refused at line 1,000,001 instead of 6
    "line-too-long": b"short\n" + b"x" * (DEFAULT.max_line_chars + 100) + b"\n",
    "too-many-columns-csv": b"\n" + b",".join([b"c"] * (DEFAULT.max_columns + 1)) + b"\n"
                            + b",".join([b"1"] * (DEFAULT.max_columns + 1)) + b"\n",
    "too-many-columns-jsonl": b'{"a": 1}\n' + json.dumps({f"k{i}": i for i in range(DEFAULT.max_columns + 1)}).encode()
                              + b"\n",
    "too-many-columns-json-object": json.dumps({f"k{i}": [i] for i in range(DEFAULT.max_columns + 1)}).encode(),
    "too-many-columns-parquet": parquet_bytes(pa.table({f"k{i}": [i] for i in range(DEFAULT.max_columns + 1)})),
}
WHERE_OVER_DEFAULT_LIMITS = {"too-many-rows": {"line": DEFAULT.max_rows + 1}}
# A person cannot choose an encoding in either door: both detect it (Latin-1 here), so the fixture's
# own refusal cannot happen; the doors must still agree on the file (one class, as it happens).
NO_ENCODING_CHOICE = {"wrong-encoding-chosen"}
# The one fixture whose column mapping is a person's choice rather than the detected one.
CHOSEN_LAYOUT = {"missing-mapped-column"}

EXTRA_CASES = [  # the refusals `datasets add` used to let through, as the page's upload sees them (no mapping)
    ("no-usable-column", "nested.jsonl", b'{"meta": {"a": 1}, "tags": [1, 2]}\n{"meta": {"a": 2}, "tags": [3]}\n',
     {}, None, "bad_field", {"row": 1}),
    ("one-class-detected", "spam.csv", b"text,label\nbuy now,spam\ncheap pills,spam\n", {}, None, "one_class",
     {"field": "label"}),
    ("null-label-detected", "nulls.jsonl",
     b"".join(json.dumps({"text": f"t{i}", "label": ["x", "y", None][min(i // 4, 2)]}).encode() + b"\n"
              for i in range(9)), {}, None, "empty_field", {"line": 9, "field": "label"}),
    ("unknown-role-detected", "roles.jsonl",
     json.dumps({"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}).encode(),
     {}, None, "bad_field", {"field": "messages[0].role"}),
]
CASES = BAD_CASES + EXTRA_CASES


def door_settings(options: dict) -> dict[str, str]:
    """The studio setting that stands for a fixture's read options (only the byte bound is one)."""
    limits = options.get("limits")
    if limits is not None and limits.max_bytes != DEFAULT.max_bytes:
        return {"TUNESTUDIO_MAX_UPLOAD_BYTES": str(limits.max_bytes)}
    return {}


def cli_add(path: Path, home: Path, env_extra: dict[str, str], layout) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESTUDIO_")}
    env.update(TUNESTUDIO_HOME=str(home), **env_extra)
    args = [str(TUNESTUDIO), "datasets", "add", str(path)]
    if layout is not None:
        shape, mapping = layout
        args += ["--shape", shape] + [a for role, column in mapping.items() for a in ("--map", f"{role}={column}")]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def box_text(box: str | None) -> str | None:
    """The message inside the data step's error box, as a person reads it."""
    if box is None:
        return None
    found = re.fullmatch(r"<div class='ts-error' id='data-error'>(.*)</div>", box, re.S)
    assert found, box
    return html.unescape(found[1])


def stored_files(ctx: Context) -> list[Path]:
    return [p for p in ctx.settings.uploads_dir.rglob("*") if p.is_file()] if ctx.settings.uploads_dir.exists() \
        else []


def case_file(folder: Path, case: str, name: str, content: bytes) -> Path:
    path = folder / "upload" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(OVER_DEFAULT_LIMITS.get(case, content))
    return path


@pytest.mark.parametrize("name,content,options,mapping,code,where", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_datasets_add_and_the_data_step_refuse_the_same_files_with_the_same_message(
        tmp_path, request, name, content, options, mapping, code, where):
    from app.ui.steps import data as data_step

    case = request.node.callspec.id
    path = case_file(tmp_path, case, name, content)
    env_extra = door_settings(options)
    layout = mapping if case in CHOSEN_LAYOUT else None
    cli_home = tmp_path / "cli-home"
    cli = cli_add(path, cli_home, env_extra, layout)

    ui_ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "ui-home"), **env_extra}))
    try:
        try:
            register_upload(ui_ctx, path, name, *(layout or (None, None)))
            service = None
        except DataError as exc:
            service = exc
        if layout is None:  # what the page runs on upload and on Next (it never passes a mapping)
            upload_ref, refusal = data_step.register(ui_ctx, str(path), name)
            upload_box = data_step.upload_shown(upload_ref, refusal)["data.status"]
            next_ref, next_box = data_step.next_from_data(upload_ref, refusal)
        ui_rows, ui_files = list_datasets(ui_ctx), stored_files(ui_ctx)
    finally:
        ui_ctx.close()

    assert cli.returncode == (1 if service else 0), cli.stdout + cli.stderr
    if service is None:
        assert case in NO_ENCODING_CHOICE, f"both doors registered {name}"
        return
    assert cli.stderr.strip().splitlines()[-1] == f"error: {service}"  # the same refusal, word for word
    if case not in NO_ENCODING_CHOICE:
        assert service.code == code, str(service)
        for key, value in {**where, **WHERE_OVER_DEFAULT_LIMITS.get(case, {})}.items():
            assert getattr(service, key) == value, f"{key}: {getattr(service, key)!r} in {service}"
    if layout is None:
        assert (upload_ref, box_text(upload_box)) == (None, str(service))
        assert (next_ref, box_text(next_box)) == (None, str(service))

    assert ui_rows == [] and ui_files == []
    cli_ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(cli_home)}))
    try:
        assert list_datasets(cli_ctx) == [] and stored_files(cli_ctx) == []
    finally:
        cli_ctx.close()


def test_a_good_file_is_registered_by_both_doors_with_the_same_shape(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngreat,pos\nawful,neg\n", encoding="utf-8")
    cli = cli_add(path, tmp_path / "cli-home", {}, None)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == "dataset 1: reviews.csv (csv, 2 rows, columns text, label, shape classification)"
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "ui-home")}))
    try:
        view = register_upload(ctx, path, "reviews.csv")
        assert (view.rows, view.shape) == (2, "classification")
        assert Path(view.path).read_bytes() == path.read_bytes()
        assert Path(view.path).parent.parent == ctx.settings.uploads_dir
    finally:
        ctx.close()


def test_a_chosen_layout_registers_what_detection_would_refuse(tmp_path):
    """One class is no classifier, but it is text to learn from: ``--shape text`` says so."""
    path = tmp_path / "spam.csv"
    path.write_text("text,label\nbuy now,spam\ncheap pills,spam\n", encoding="utf-8")
    refused = cli_add(path, tmp_path / "cli-home", {}, None)
    assert refused.returncode == 1 and "every row has the same label ('spam')" in refused.stderr
    taken = cli_add(path, tmp_path / "cli-home", {}, ("text", {"text": "text"}))
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.strip().endswith("shape text)")

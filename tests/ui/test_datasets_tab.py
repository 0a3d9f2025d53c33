"""The Datasets tab lists every registered dataset with its stored size and the runs that read it, and
deletes through the CLI's ``delete_dataset`` (refused in the same words while a run reads it); the
run view says what a run takes on disk."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.refs import registered_ref
from app.core.settings import Settings
from app.registry.models import Run
from app.services import add_dataset, list_datasets
from app.services.context import Context
from app.services.estimate import human_bytes
from app.ui.tabs import datasets as datasets_tab
from app.ui.tabs import run_view

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def ctx(home):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(home)}))
    yield c
    c.close()


def add_csv(ctx, folder: Path, name: str, rows: int):
    path = folder / name
    path.write_text("text,label\n" + "".join(f"row {i},{'pos' if i % 2 else 'neg'}\n" for i in range(rows)),
                    encoding="utf-8")
    return add_dataset(ctx, path, name=name)


def seed_run(ctx, dataset_id: int, status: str) -> int:
    spec = {"name": f"uses {dataset_id}", "model": {"name": "org/tiny"}, "data": {"dataset": registered_ref(dataset_id)},
            "method": {"peft_type": "LORA"}, "training": {}}
    with ctx.session() as s:
        run = Run(name=spec["name"], status=status, spec=spec, model="org/tiny", method="LORA")
        s.add(run)
        s.commit()
        return run.id


def table_rows(answer) -> dict[int, dict]:
    frame = answer["datasets.table"]
    return {int(r["id"]): r for r in frame.to_dict("records")}


def test_the_list_says_size_on_disk_and_which_runs_read_each_dataset(ctx, tmp_path):
    small = add_csv(ctx, tmp_path, "small.csv", 4)
    big = add_csv(ctx, tmp_path, "big.csv", 400)
    done = seed_run(ctx, small.id, "succeeded")
    training = seed_run(ctx, big.id, "running")
    later = seed_run(ctx, big.id, "failed")

    rows = table_rows(datasets_tab.listing(ctx))

    assert rows[small.id]["on disk"] == human_bytes(Path(small.path).stat().st_size)
    assert rows[big.id]["on disk"] == human_bytes((tmp_path / "big.csv").stat().st_size)
    assert rows[small.id]["used by runs"] == f"#{done} succeeded"
    assert rows[big.id]["used by runs"] == f"#{later} failed, #{training} running"
    assert (rows[big.id]["name"], rows[big.id]["rows"], rows[big.id]["shape"]) == ("big.csv", 400, "classification")
    choices = datasets_tab.listing(ctx)["datasets.selected"].choices
    assert [value for _, value in choices] == [big.id, small.id]
    assert datasets_tab.listing(ctx, small.id)["datasets.selected"].value == small.id  # a pick is kept
    assert datasets_tab.listing(ctx, 999)["datasets.selected"].value is None


def test_delete_is_refused_in_the_clis_words_while_a_run_reads_the_dataset(ctx, home, tmp_path):
    used = add_csv(ctx, tmp_path, "used.csv", 4)
    run_id = seed_run(ctx, used.id, "queued")

    shown = datasets_tab.delete(ctx, used.id, True)

    cli = subprocess.run([sys.executable, "-m", "app.cli", "datasets", "delete", str(used.id)], cwd=ROOT,
                         env={"TUNESTUDIO_HOME": str(home), "PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode != 0
    said = re.fullmatch(r"<div class='ts-error' id='datasets-error'>(.*)</div>", shown)[1]
    assert f"error: {html.unescape(said)}" == cli.stderr.strip().splitlines()[-1]
    assert f"run {run_id} (queued)" in html.unescape(said)
    assert [d.id for d in list_datasets(ctx)] == [used.id] and Path(used.path).is_file()


def test_delete_removes_the_row_and_the_stored_file_and_asks_first(ctx, tmp_path):
    gone = add_csv(ctx, tmp_path, "gone.csv", 4)
    kept = add_csv(ctx, tmp_path, "kept.csv", 6)
    seed_run(ctx, gone.id, "succeeded")  # a finished run does not hold its data

    assert datasets_tab.delete(ctx, gone.id, False) == "Tick the confirmation box to delete."
    assert datasets_tab.delete(ctx, None, True) == "Pick a dataset first."
    assert Path(gone.path).is_file()

    assert datasets_tab.delete(ctx, gone.id, True) == f"Dataset #{gone.id} and its stored file were deleted."
    assert [d.id for d in list_datasets(ctx)] == [kept.id]
    assert not Path(gone.path).exists() and Path(kept.path).is_file()
    assert list(table_rows(datasets_tab.listing(ctx))) == [kept.id]


def test_the_run_view_says_what_the_run_takes_on_disk(ctx, tmp_path):
    data = add_csv(ctx, tmp_path, "d.csv", 4)
    run_id = seed_run(ctx, data.id, "succeeded")
    folder = ctx.settings.run_dir(run_id)
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "weights.safetensors").write_bytes(b"\0" * 3 * 2**20)
    (folder / "log.txt").write_bytes(b"x" * 2**19)

    header = run_view.draw(ctx, run_id, None)["run.header"]

    disk = re.search(r"<div id='run-disk'>(.*?)</div>", header)[1]
    assert disk.startswith("On disk: 3.5 MiB")

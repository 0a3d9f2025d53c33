"""`tunestudio datasets add / delete / list` and `runs show` as a person runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tunestudio(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNESTUDIO_HOME": str(home), "TUNESTUDIO_DATA_ROOTS": str(home.parent)}
    for key in ("TUNESTUDIO_DATABASE_URL", "TUNESTUDIO_BROKER_URL"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


def test_a_dataset_in_use_is_kept_until_its_run_ends_then_deleted_with_its_file(tmp_path):
    home = tmp_path / "home"
    data = tmp_path / "pairs.csv"
    data.write_text("prompt,response\nhi,hello\nbye,see you\n")
    added = tunestudio(home, "datasets", "add", str(data))
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("dataset 1: pairs.csv (csv, 2 rows")
    stored = list((home / "artifacts" / "datasets").rglob("pairs.csv"))
    assert len(stored) == 1

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: uses-it\nmodel: {name: SmolLM2-135M-Instruct}\ndata: {dataset: 'dataset:1'}\n"
                    "method: {peft_type: LORA}\n")
    assert tunestudio(home, "train", str(spec)).returncode == 0

    refused = tunestudio(home, "datasets", "delete", "1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: dataset 1 is used by run 1 (queued): cancel it or let it finish first"
    assert stored[0].is_file()

    assert tunestudio(home, "runs", "cancel", "1").returncode == 0
    deleted = tunestudio(home, "datasets", "delete", "1")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "dataset 1 deleted"
    assert not stored[0].exists()
    assert tunestudio(home, "datasets", "list").stdout.strip() == ""

    missing = tunestudio(home, "datasets", "delete", "1")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: no dataset with id 1")


def test_runs_show_reports_the_runs_disk_use(tmp_path):
    home = tmp_path / "home"
    spec = tmp_path / "spec.yaml"
    (tmp_path / "pairs.csv").write_text("prompt,response\nhi,hello\n")
    spec.write_text("name: d\nmodel: {name: SmolLM2-135M-Instruct}\ndata: {dataset: pairs.csv}\n"
                    "method: {peft_type: LORA}\n")
    assert tunestudio(home, "train", str(spec)).returncode == 0
    folder = home / "artifacts" / "runs" / "run-1"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * (3 * 2**20))
    shown = tunestudio(home, "runs", "show", "1")
    assert "  disk     3.0 MiB" in shown.stdout.splitlines()

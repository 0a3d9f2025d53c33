"""The run's adapter is its best eval's: the download, the playground and merges use it; the last one
stays downloadable (``last=True``, ``tunestudio export N --last``).

One real run through the worker's ``execute_run`` (registry reporter, real engine): training answers
" blue", validation expects " red", so the eval loss falls, then rises, and early stopping ends it.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
import torch
import transformers

import tuners
from app.cli import main
from app.core.settings import Settings
from app.registry.models import Artifact, Run
from app.services import export, merged, playground, runs
from app.services.context import Context
from tests.engine.helpers import COLOURS, mapping_spec, save_tiny_model
from worker.tasks import execute_run


def _answers(path: Path, answer: str, repeats: int) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows({"prompt": f"Q{r}: what colour is the {thing}? A:", "completion": answer}
                         for r in range(repeats) for thing in COLOURS)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("studio")


@pytest.fixture(scope="module")
def ctx(home):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(home / "home"), "TUNESTUDIO_DATA_ROOTS": str(home)}))
    yield c
    c.close()


@pytest.fixture(scope="module")
def stopped_run(ctx, home):
    """A finished run whose best eval came before its last step."""
    llama = save_tiny_model(home / "llama")
    spec = mapping_spec(llama, _answers(home / "train.csv", " blue", 4), max_steps=30, eval_every=2,
                        learning_rate=0.02, early_stopping_patience=2)
    spec["data"]["validation"] = str(_answers(home / "validation.csv", " red", 1))
    run_id = runs.create_run(ctx, spec)
    assert execute_run(run_id, ctx.settings, ctx.registry) == "succeeded"
    return runs.get_run(ctx, run_id)


def _logits(tuned, tokenizer) -> torch.Tensor:
    ids = tokenizer("Q0: what colour is the sky? A:", return_tensors="pt")
    with torch.no_grad():
        return tuned(**ids).logits


def _tuned(ctx, run: runs.RunView, adapter: str):
    """The run's base model with ``adapter`` loaded, as the playground loads one."""
    spec = runs.get_spec(ctx, run.id)
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec.model.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(spec.model.name)
    return tuners.load(model, adapter).eval(), tokenizer


def test_the_run_view_names_the_best_adapter_and_the_last(stopped_run, ctx):
    run = stopped_run
    assert run.step < run.total_steps == 30  # stopped early
    assert run.best_step is not None and 0 < run.best_step < run.step
    assert Path(run.adapter_path) == ctx.settings.run_dir(run.id) / "best" / f"step-{run.best_step}"
    assert Path(run.last_adapter_path) == ctx.settings.run_dir(run.id) / "adapter"
    assert any(f"stopping at step {run.step}: no eval improved on step {run.best_step}'s loss" in line
               for line in runs.logs(ctx, run.id))
    assert runs.list_runs(ctx)[0] == run


def test_the_download_is_the_best_adapter_and_the_last_stays_downloadable(stopped_run, ctx, home, monkeypatch):
    run = stopped_run
    best_zip = export.export_adapter_zip(ctx, run.id)
    last_zip = export.export_adapter_zip(ctx, run.id, last=True)
    assert best_zip != last_zip and last_zip.name.endswith("-last.zip")
    for zip_path, folder in ((best_zip, run.adapter_path), (last_zip, run.last_adapter_path)):
        with zipfile.ZipFile(zip_path) as z:
            assert sorted(z.namelist()) == sorted(p.name for p in Path(folder).iterdir())
            assert z.read("adapter_model.safetensors") == (Path(folder) / "adapter_model.safetensors").read_bytes()
    assert (Path(run.adapter_path) / "adapter_model.safetensors").read_bytes() != (
        Path(run.last_adapter_path) / "adapter_model.safetensors").read_bytes()

    # the CLI: the best by default, the last with --last
    monkeypatch.setenv("TUNESTUDIO_HOME", str(ctx.settings.home))
    for flag, expected in (([], best_zip), (["--last"], last_zip)):
        out = home / f"cli{''.join(flag)}.zip"
        assert main(["export", str(run.id), "--out", str(out), *flag]) == 0
        with zipfile.ZipFile(out) as got, zipfile.ZipFile(expected) as want:
            assert got.read("adapter_model.safetensors") == want.read("adapter_model.safetensors")


def test_the_playground_and_the_merged_model_use_the_best_adapter(stopped_run, ctx, home):
    run = stopped_run
    best, tokenizer = _tuned(ctx, run, run.adapter_path)
    last, _ = _tuned(ctx, run, run.last_adapter_path)
    want, other = _logits(best, tokenizer), _logits(last, tokenizer)
    assert not torch.allclose(want, other, atol=1e-3)

    loaded = playground.load_run(ctx, run.id)
    assert torch.equal(_logits(loaded.tuned, loaded.tokenizer), want)

    zip_path = merged.export_merged_zip(ctx, run.id)
    zipfile.ZipFile(zip_path).extractall(home / "merged")
    model = transformers.AutoModelForCausalLM.from_pretrained(home / "merged").eval()
    assert torch.allclose(_logits(model, tokenizer), want, atol=1e-4)


def _seed(ctx, tmp_path, status: str, artifacts: list[tuple[str, str, int]]) -> int:
    """A run with artifact rows whose folders exist (a folder name starting with "gone" does not)."""
    with ctx.session() as s:
        run = Run(name="r", status=status, spec={}, model="m", method="LORA", step=10)
        s.add(run)
        s.flush()
        for kind, name, step in artifacts:
            if not name.startswith("gone"):
                (tmp_path / name).mkdir(parents=True, exist_ok=True)
            s.add(Artifact(run_id=run.id, kind=kind, path=str(tmp_path / name), step=step, bytes=1, sha256="0" * 64))
        s.commit()
        return run.id


@pytest.mark.parametrize(("status", "artifacts", "adapter", "last", "best_step"), [
    ("succeeded", [("adapter", "a", 10)], "a", "a", None),  # no validation split: nothing ranked
    ("succeeded", [("best_adapter", "gone-b0", 0), ("best_adapter", "b4", 4), ("adapter", "a", 10)], "b4", "a", 4),
    ("succeeded", [("best_adapter", "gone-b0", 0), ("adapter", "a", 10), ("best_adapter", "a", 10)], "a", "a", 10),
    # the kept copy went (a resumed attempt did not reproduce the eval it was written at): the last one
    ("succeeded", [("best_adapter", "gone-b4", 4), ("adapter", "a", 10)], "a", "a", None),
    ("cancelled", [("best_adapter", "b4", 4)], None, None, 4),  # kept, but no final adapter: nothing to use yet
])
def test_which_folder_is_the_run_adapter(ctx, tmp_path, status, artifacts, adapter, last, best_step):
    run = runs.get_run(ctx, _seed(ctx, tmp_path, status, artifacts))
    folder = lambda name: str(tmp_path / name) if name else None  # noqa: E731
    assert (run.adapter_path, run.last_adapter_path, run.best_step) == (folder(adapter), folder(last), best_step)
    if adapter is None:
        with pytest.raises(export.NoAdapter):
            export.export_adapter_zip(ctx, run.id, last=True)

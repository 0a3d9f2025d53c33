"""The best eval's adapter is kept (best/step-N) and is the run's adapter; early stopping from the spec.

The data make the eval loss fall and then rise: training answers every question " blue", validation
expects " red" for the same questions. The model first learns the answer's shape (the end of text after
one word), which lowers the validation loss too, then grows sure of " blue", which raises it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.core.spec import RunSpec
from tests.engine.helpers import COLOURS, mapping_spec, save_tiny_model
from worker.engine import EvalResult, MemoryReporter, TrainingRecipe, TrainState


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


def _answers(path: Path, answer: str, repeats: int) -> Path:
    rows = [{"prompt": f"Q{r}: what colour is the {thing}? A:", "completion": answer}
            for r in range(repeats) for thing in COLOURS]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def blue_then_red(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return _answers(folder / "train.csv", " blue", 4), _answers(folder / "validation.csv", " red", 1)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "adapter_model.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_rising_eval_loss_stops_the_run_and_the_best_eval_adapter_is_kept(llama_dir, blue_then_red, tmp_path):
    train_file, validation = blue_then_red
    spec = mapping_spec(llama_dir, train_file, max_steps=30, eval_every=2, learning_rate=0.02,
                        early_stopping_patience=2)
    spec["data"]["validation"] = str(validation)
    reporter = MemoryReporter()
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "run", reporter, tmp_path / "models")
    evals: list[EvalResult] = []

    def snapshot(result: EvalResult, state: TrainState) -> None:
        """An ordinary checkpoint at every eval, to compare the kept best adapter with."""
        evals.append(result)
        recipe.save_checkpoint(tmp_path / "at" / f"{result.step}-{len(evals)}")

    recipe.callbacks.insert(0, snapshot)
    recipe.setup()
    result = recipe.run()

    losses = [e.sample_loss for e in evals]
    best = min(range(len(evals)), key=losses.__getitem__)
    best_step = evals[best].step
    # It fell, then rose for two evals in a row (patience 2), and the run stopped there, long before step 30.
    assert 0 < best_step < result.steps < 30
    assert losses[best] < losses[0] and all(x > losses[best] for x in losses[best + 1:])
    assert [e.step for e in evals[best + 1:]] == [best_step + 2, best_step + 4, best_step + 4]  # + the last eval
    assert result.stopped_early and "patience 2" in result.stopped_early
    stop = f"info stopping at step {result.steps}: no eval improved on step {best_step}'s loss "
    assert any(line.startswith(stop) for line in reporter.lines)
    assert result.best_step == best_step

    # The kept adapter is the one the run had at its best eval, tensor for tensor; the last one is kept too.
    kept = tmp_path / "run" / "best" / f"step-{best_step}"
    assert result.best_adapter_dir == kept and [p.name for p in kept.parent.iterdir()] == [kept.name]
    at_best = tmp_path / "at" / f"{best_step}-{best + 1}"
    assert _same(_tensors(kept), _tensors(at_best))
    assert not _same(_tensors(kept), _tensors(result.adapter_dir))
    assert _same(_tensors(result.adapter_dir), _tensors(tmp_path / "at" / f"{result.steps}-{len(evals)}"))
    assert {p.name for p in kept.iterdir()} == {p.name for p in result.adapter_dir.iterdir()}  # the same extras
    assert (kept / "training_config.yaml").read_text() == (result.adapter_dir / "training_config.yaml").read_text()

    # Each new best was registered as it was written, the last of them being the kept one.
    best_artifacts = [(path, step) for kind, path, step in reporter.artifacts if kind == "best_adapter"]
    assert [step for _, step in best_artifacts] == [e.step for i, e in enumerate(evals[: best + 1])
                                                   if losses[i] == min(losses[: i + 1])]
    assert best_artifacts[-1] == (kept, best_step)
    assert any(line.startswith(f"info best eval: step {best_step}, sample loss ") for line in reporter.lines)


def test_when_the_last_eval_is_the_best_the_final_adapter_is_the_best_and_no_copy_stays(llama_dir, blue_then_red,
                                                                                       tmp_path):
    train_file, _ = blue_then_red  # validated on its own answers: the loss only falls
    spec = mapping_spec(llama_dir, train_file, max_steps=4, eval_every=2, learning_rate=0.02)
    reporter = MemoryReporter()
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "run", reporter, tmp_path / "models")
    recipe.setup()
    result = recipe.run()

    samples = [e.sample_loss for e in recipe.state.evals]
    assert samples == sorted(samples, reverse=True) and result.best_step == 4 and result.stopped_early is None
    assert result.best_adapter_dir == result.adapter_dir and not (tmp_path / "run" / "best").exists()
    assert [(kind, step) for kind, _, step in reporter.artifacts] == [
        ("best_adapter", 0), ("best_adapter", 2), ("adapter", 4), ("best_adapter", 4)]
    assert reporter.artifacts[-1][1] == result.adapter_dir


def _history(*accuracies: float) -> TrainState:
    state = TrainState(tuned=None, optimizer=None, scheduler=None, data=None)
    state.evals = [EvalResult(step=10 * i, loss=1.0, sample_loss=1.0 - i / 100, examples=12,
                              metrics={"accuracy": 0.0}, sample_metrics={"accuracy": a})
                   for i, a in enumerate(accuracies)]
    return state


def test_accuracy_ranks_evals_highest_first_on_the_sample():
    state = _history(0.5, 0.7, 0.72, 0.65)
    assert state.best(metric="accuracy").step == 20 and state.best(0.05, "accuracy").step == 10
    assert state.best().step == 30  # the loss (falling throughout) still ranks by default

"""Checkpoint cadence (steps and minutes), retention (the newest K) and a stop for a stopping worker
(a checkpoint at once, then :class:`Preempted`), on the real engine with a tiny Llama."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from app.core.spec import RunSpec, SpecError
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.checkpoints import STATE_FILE, checkpoint_dir, latest_checkpoint, prune_checkpoints
from worker.engine import Cancelled, MemoryReporter, Preempted, TrainingRecipe, train

STEPS = 7


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory):
    return write_mapping_csv(tmp_path_factory.mktemp("data") / "colours.csv")


def _spec(llama_dir, mapping_file, **training) -> RunSpec:
    spec = mapping_spec(llama_dir, mapping_file, **{"max_steps": STEPS, "batch_size": 4, "eval_every": 3,
                                                    "checkpoint_minutes": 0, **training})
    spec["method"]["lora_dropout"] = 0.1
    return RunSpec.from_dict(spec)


def _checkpoints(reporter: MemoryReporter) -> list[int]:
    """The steps of the checkpoints the run registered (other artifacts: the adapter, the best eval's)."""
    return [step for kind, _, step in reporter.artifacts if kind == "checkpoint"]


def _fake_checkpoint(folder, step: int, complete: bool = True):
    path = checkpoint_dir(folder, step)
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        (path / STATE_FILE).write_bytes(b"x")
    return path


@pytest.mark.parametrize(("training", "message"), [
    ({"checkpoint_minutes": -1}, "training.checkpoint_minutes: must be >= 0, got -1"),
    ({"checkpoint_minutes": float("inf")}, "training.checkpoint_minutes: must be a finite number, got inf"),
    ({"keep_checkpoints": 0}, "training.keep_checkpoints: must be >= 1, got 0"),
])
def test_checkpoint_settings_out_of_range_are_refused_by_field(llama_dir, mapping_file, training, message):
    with pytest.raises(SpecError, match=message):
        _spec(llama_dir, mapping_file, **training)


def test_defaults_checkpoint_every_ten_minutes_and_keep_two(llama_dir, mapping_file):
    training = RunSpec.from_dict(mapping_spec(llama_dir, mapping_file)).training
    assert (training.checkpoint_minutes, training.keep_checkpoints) == (10.0, 2)


def test_time_cadence_checkpoints_and_only_the_newest_are_kept(llama_dir, mapping_file, tmp_path):
    # A cadence shorter than any step: a checkpoint after every step but the last, the newest 2 kept.
    spec = _spec(llama_dir, mapping_file, checkpoint_every=0, checkpoint_minutes=1e-9, keep_checkpoints=2)
    reporter = MemoryReporter()
    train(spec, tmp_path, reporter, tmp_path / "models")
    assert _checkpoints(reporter) == list(range(1, STEPS))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-5", "step-6"]
    assert all((p / STATE_FILE).is_file() for p in (tmp_path / "checkpoints").iterdir())


def test_no_time_checkpoint_before_the_cadence(llama_dir, mapping_file, tmp_path):
    reporter = MemoryReporter()
    train(_spec(llama_dir, mapping_file, checkpoint_minutes=60), tmp_path, reporter, tmp_path / "models")
    assert _checkpoints(reporter) == []
    assert not (tmp_path / "checkpoints").exists()


def test_pruning_keeps_the_newest_and_the_protected_and_drops_incomplete(tmp_path):
    for step in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path, step)
    _fake_checkpoint(tmp_path, 10, complete=False)
    removed = prune_checkpoints(tmp_path / "checkpoints", keep=2, protect=[checkpoint_dir(tmp_path, 2)])
    assert sorted(p.name for p in removed) == ["step-10", "step-4"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2", "step-6", "step-8"]


def test_the_latest_complete_checkpoint_is_resumed_and_a_half_written_one_removed(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    _fake_checkpoint(tmp_path, 3)
    _fake_checkpoint(tmp_path, 12)
    _fake_checkpoint(tmp_path, 15, complete=False)  # its worker died while writing it
    assert latest_checkpoint(tmp_path) == (12, checkpoint_dir(tmp_path, 12))
    assert not checkpoint_dir(tmp_path, 15).exists()


def test_a_stopping_worker_checkpoints_at_once_and_the_resumed_run_equals_the_whole_one(llama_dir, mapping_file,
                                                                                       tmp_path):
    spec = _spec(llama_dir, mapping_file, checkpoint_every=0)
    whole_rep = MemoryReporter()
    whole = train(spec, tmp_path / "whole", whole_rep, tmp_path / "models")

    first_rep = MemoryReporter(preempt_after_step=4)  # off every cadence: only the stop writes one
    with pytest.raises(Preempted) as stopped:
        train(spec, tmp_path / "run", first_rep, tmp_path / "models")
    assert stopped.value.step == 4 and stopped.value.checkpoint == checkpoint_dir(tmp_path / "run", 4)
    assert latest_checkpoint(tmp_path / "run") == (4, stopped.value.checkpoint)
    assert _checkpoints(first_rep) == [4]

    second_rep = MemoryReporter()
    resumed = train(spec, tmp_path / "run", second_rep, tmp_path / "models", resume_from=stopped.value.checkpoint)
    history = [(p.step, p.split, p.loss, p.learning_rate, p.grad_norm) for p in first_rep.points + second_rep.points]
    assert history == [(p.step, p.split, p.loss, p.learning_rate, p.grad_norm) for p in whole_rep.points]
    expected, got = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (whole, resumed))
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_stop_before_the_first_step_writes_no_checkpoint(llama_dir, mapping_file, tmp_path):
    recipe = TrainingRecipe(_spec(llama_dir, mapping_file), tmp_path, MemoryReporter(preempt_after_step=0),
                            tmp_path / "models")
    recipe.setup()
    with pytest.raises(Preempted) as stopped:
        recipe.run()
    assert (stopped.value.step, stopped.value.checkpoint) == (0, None)
    assert not (tmp_path / "checkpoints").exists()


def test_a_cancelled_run_keeps_a_checkpoint_of_the_step_it_stopped_at(llama_dir, mapping_file, tmp_path):
    reporter = MemoryReporter(stop_after_step=3)
    with pytest.raises(Cancelled, match="cancelled at step 3"):
        train(_spec(llama_dir, mapping_file), tmp_path, reporter, tmp_path / "models")
    assert latest_checkpoint(tmp_path) == (3, checkpoint_dir(tmp_path, 3))
    assert _checkpoints(reporter) == [3]

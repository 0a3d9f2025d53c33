"""A run stopped part-way and resumed from its checkpoint ends exactly as one that never stopped.

The run draws randomness while it trains (LoRA dropout) and crosses an epoch boundary (a new data
permutation), so the checkpoint has to carry the adapter, the optimizer and schedule, every RNG and the
data order and cursor for the two halves to match the whole run bit for bit on CPU.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from app.core.spec import RunSpec, SpecError
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.engine import STATE_FILE, Cancelled, MemoryReporter, Point, TrainingRecipe, train

STEPS = 9  # 48 training examples, 8 per step: an epoch is 6 steps


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory):
    return write_mapping_csv(tmp_path_factory.mktemp("data") / "colours.csv")


def _spec(llama_dir, mapping_file, **training) -> RunSpec:
    spec = mapping_spec(llama_dir, mapping_file, max_steps=STEPS, batch_size=4, grad_accum=2, eval_every=2,
                        scheduler="cosine", **training)
    spec["method"]["lora_dropout"] = 0.1
    return RunSpec.from_dict(spec)


def _history(points: list[Point]) -> list[tuple]:
    """Everything a point records except the wall-clock speed."""
    return [(p.step, p.split, p.loss, p.learning_rate, p.grad_norm, p.accuracy) for p in points]


def _adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(llama_dir, mapping_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    reporter = MemoryReporter()
    result = train(_spec(llama_dir, mapping_file, checkpoint_every=4), out, reporter, out / "models")
    return result, reporter


def test_a_run_stopped_and_resumed_equals_the_uninterrupted_run(uninterrupted, llama_dir, mapping_file, tmp_path):
    whole, whole_rep = uninterrupted
    spec = _spec(llama_dir, mapping_file, checkpoint_every=4)

    first_rep = MemoryReporter(stop_after_step=5)  # stopped between steps 5 and 6, off the checkpoint cadence
    first = TrainingRecipe(spec, tmp_path / "first", first_rep, tmp_path / "models")
    first.setup()
    with pytest.raises(Cancelled):
        first.run()
    checkpoint = first.save_checkpoint(tmp_path / "stopped")
    assert (checkpoint / STATE_FILE).is_file() and (checkpoint / "adapter_model.safetensors").is_file()

    second_rep = MemoryReporter()
    resumed = train(spec, tmp_path / "second", second_rep, tmp_path / "models", resume_from=checkpoint)

    assert "info resumed from step 5" in "\n".join(second_rep.lines)
    assert [p.step for p in second_rep.points][0] == 6  # no second step-0 eval, nothing repeated
    assert _history(first_rep.points + second_rep.points) == _history(whole_rep.points)
    expected, got = _adapter(whole.adapter_dir), _adapter(resumed.adapter_dir)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert (resumed.steps, resumed.last_eval_loss, resumed.first_eval_loss, resumed.best_step) == (
        whole.steps, whole.last_eval_loss, whole.first_eval_loss, whole.best_step)


def test_a_run_resumed_from_its_periodic_checkpoint_equals_the_uninterrupted_run(uninterrupted, llama_dir,
                                                                                 mapping_file, tmp_path):
    whole, whole_rep = uninterrupted
    assert [(kind, step) for kind, _, step in whole_rep.artifacts if kind != "best_adapter"] == [
        ("checkpoint", 4), ("checkpoint", 8), ("adapter", STEPS)]
    checkpoint = next(path for kind, path, step in whole_rep.artifacts if kind == "checkpoint" and step == 4)

    reporter = MemoryReporter()
    resumed = train(_spec(llama_dir, mapping_file, checkpoint_every=4), tmp_path, reporter, tmp_path / "models",
                    resume_from=checkpoint)

    after = [p for p in whole_rep.points if p.step > 4]
    assert _history(reporter.points) == _history(after)
    expected, got = _adapter(whole.adapter_dir), _adapter(resumed.adapter_dir)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_resuming_with_another_method_is_refused(uninterrupted, llama_dir, mapping_file, tmp_path):
    _, whole_rep = uninterrupted
    checkpoint = next(path for kind, path, step in whole_rep.artifacts if kind == "checkpoint")
    spec = mapping_spec(llama_dir, mapping_file, max_steps=STEPS, batch_size=4, grad_accum=2)
    spec["method"]["r"] = 4
    with pytest.raises(SpecError) as caught:
        train(RunSpec.from_dict(spec), tmp_path, MemoryReporter(), tmp_path / "models", resume_from=checkpoint)
    assert caught.value.path == "method" and "checkpoint's adapter does not match" in str(caught.value)

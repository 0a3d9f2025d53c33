"""The next step's batches are collated on a background thread while the current step trains, and the
run is exactly the run without it: same examples in the same order, same losses, same adapter."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from app.core.spec import RunSpec
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.engine import DataOrder, MemoryReporter, TrainingRecipe
from worker.prefetch import Prefetcher


def test_peek_shows_the_next_takes_without_taking_them_and_stops_at_the_epoch_s_end():
    order = DataOrder(10, seed=0)
    assert order.peek(4) is None  # no permutation drawn yet
    first = order.take(4)
    upcoming = order.peek(4, times=2)
    assert upcoming == [order.take(4), order.take(4)]  # the second is the epoch's short last batch
    assert len(upcoming[1]) == 2 and sorted(first + upcoming[0] + upcoming[1]) == list(range(10))
    assert order.peek(4) is None  # the next permutation is drawn only when taken


def test_a_scheduled_step_is_collated_on_another_thread_and_served_only_for_its_own_indices():
    threads: list[str] = []

    def collate(indices):
        threads.append(threading.current_thread().name)
        return {"ids": torch.tensor(list(indices))}

    prefetcher = Prefetcher(collate)
    prefetcher.schedule([[1, 2], [3]])
    got = prefetcher.batches([[1, 2], [3]])
    assert [b["ids"].tolist() for b in got] == [[1, 2], [3]] and prefetcher.hits == 1
    assert threads == ["tunestudio-collate", "tunestudio-collate"]

    prefetcher.schedule([[4]])
    other = prefetcher.batches([[5, 6]])  # not what was scheduled: collated now, here
    assert [b["ids"].tolist() for b in other] == [[5, 6]] and prefetcher.hits == 1
    assert threads[-1] == threading.current_thread().name


def test_an_error_while_collating_ahead_surfaces_in_the_step_that_needs_the_batch():
    def collate(indices):
        raise ValueError(f"bad example {indices[0]}")

    prefetcher = Prefetcher(collate)
    prefetcher.schedule([[7]])
    with pytest.raises(ValueError, match="bad example 7"):
        prefetcher.batches([[7]])


def _run(root, peek: bool, monkeypatch):
    if not peek:  # the next step is never known ahead: every step collated in the loop, as before
        monkeypatch.setattr(DataOrder, "peek", lambda self, count, times=1: None)
    spec = mapping_spec(save_tiny_model(root / "llama"), write_mapping_csv(root / "colours.csv"), max_steps=9,
                        eval_every=0, grad_accum=2, batch_size=4)
    spec["method"]["lora_dropout"] = 0.1  # randomness drawn while training
    reporter = MemoryReporter()
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", reporter, root / "models")
    recipe.setup()
    collated_on: list[str] = []
    batch = recipe._batch
    recipe._batch = lambda *a, **k: (collated_on.append(threading.current_thread().name), batch(*a, **k))[1]
    result = recipe.run()
    monkeypatch.undo()
    return recipe, reporter, load_file(result.adapter_dir / "adapter_model.safetensors"), collated_on


def test_a_prefetched_run_is_bit_identical_to_one_collated_in_the_loop(tmp_path, monkeypatch):
    fast, fast_points, fast_adapter, fast_threads = _run(tmp_path / "a", True, monkeypatch)
    slow, slow_points, slow_adapter, slow_threads = _run(tmp_path / "b", False, monkeypatch)

    # 48 training examples, 8 a step: a new epoch every 6 steps, whose first step is collated in the loop
    assert fast.prefetcher.hits == 7 and slow.prefetcher.hits == 0
    assert fast_threads.count("tunestudio-collate") == 2 * 7 and "tunestudio-collate" not in slow_threads
    assert [(p.loss, p.grad_norm) for p in fast_points.points] == [(p.loss, p.grad_norm) for p in slow_points.points]
    assert fast_adapter.keys() == slow_adapter.keys()
    assert all(torch.equal(fast_adapter[k], slow_adapter[k]) for k in fast_adapter)

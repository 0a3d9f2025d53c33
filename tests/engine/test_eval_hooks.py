"""After each eval: extra metrics beside the loss, callbacks that may stop the loop, the best step marked."""

from __future__ import annotations

import pytest

from app.core.spec import RunSpec
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.engine import (
    ACCURACY,
    EarlyStopping,
    EvalMetric,
    EvalResult,
    MemoryReporter,
    TrainingRecipe,
    TrainState,
    train,
)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory):
    return write_mapping_csv(tmp_path_factory.mktemp("data") / "colours.csv")  # 60 rows -> 12 validation


def _history(*sample_losses: float) -> TrainState:
    state = TrainState(tuned=None, optimizer=None, scheduler=None, data=None)
    state.evals = [EvalResult(step=10 * i, loss=x, sample_loss=x, examples=12) for i, x in enumerate(sample_losses)]
    return state


@pytest.mark.parametrize("losses,patience,min_delta,stops", [
    ((1.0, 0.9, 0.95), 2, 0.0, False),        # one eval without improvement, patience 2
    ((1.0, 0.9, 0.95, 0.91), 2, 0.0, True),   # two in a row
    ((1.0, 0.9, 0.95, 0.85), 2, 0.0, False),  # improved again: the count starts over
    ((1.0, 0.95, 0.92), 2, 0.1, True),        # lower, but never by more than min_delta
    ((1.0,), 1, 0.0, False),
])
def test_early_stopping_counts_evals_since_the_best(losses, patience, min_delta, stops):
    state = _history(*losses)
    reason = EarlyStopping(patience, min_delta)(state.evals[-1], state)
    assert (reason is not None) == stops
    if stops:
        best = state.best(min_delta)
        assert f"step {best.step}'s loss {best.sample_loss:.4f}" in reason and f"patience {patience}" in reason


def test_best_is_the_lowest_sample_loss_beyond_min_delta():
    state = _history(1.0, 0.7, 0.72, 0.65, 0.9)
    assert state.best().step == 30 and state.best(0.1).step == 10
    assert _history().best() is None


def test_an_early_stop_ends_the_run_at_that_eval_with_the_last_eval_and_adapter(llama_dir, mapping_file, tmp_path):
    seen: list[EvalResult] = []

    def record(result: EvalResult, state: TrainState) -> None:
        seen.append(result)

    reporter = MemoryReporter()
    spec = RunSpec.from_dict(mapping_spec(llama_dir, mapping_file, max_steps=40, eval_every=2))
    # No eval can beat step 0 by 100 nats: the second eval without improvement stops the loop at step 4.
    result = train(spec, tmp_path / "out", reporter, tmp_path / "models",
                   callbacks=[record, EarlyStopping(patience=2, min_delta=100.0)])

    assert result.steps == 4 and "patience 2" in result.stopped_early
    assert any(line.startswith("info stopping at step 4: no eval improved on step 0") for line in reporter.lines)
    assert [(r.step, r.examples) for r in seen] == [(0, 12), (2, 12), (4, 12), (4, 12)]  # the last: whole split
    assert [p.step for p in reporter.points if p.split == "train"] == [1, 2, 3, 4]
    assert [k for k, _, _ in reporter.artifacts if k != "best_adapter"] == ["adapter"] and result.adapter_dir.is_dir()
    assert result.best_step == min(seen, key=lambda r: r.sample_loss).step  # the best marked without min_delta
    assert result.best_sample_eval_loss == min(r.sample_loss for r in seen)


def test_extra_metrics_are_computed_at_every_eval_and_logged(llama_dir, mapping_file, tmp_path):
    token_accuracy = EvalMetric("token_accuracy", ACCURACY.measure)
    # the mean id of the target tokens: fixed by the data, so it checks what the metrics are given
    target_id = EvalMetric("target_id", lambda logits, labels: (float(labels[labels != -100].sum()),
                                                                int((labels != -100).sum())))
    seen: list[EvalResult] = []
    reporter = MemoryReporter()
    spec = RunSpec.from_dict(mapping_spec(llama_dir, mapping_file, max_steps=30, eval_every=15))
    recipe = TrainingRecipe(spec, tmp_path / "out", reporter, tmp_path / "models",
                            metrics=[token_accuracy, target_id], callbacks=[lambda r, s: seen.append(r)])
    recipe.setup()
    result = recipe.run()

    assert [r.step for r in seen] == [0, 15, 30]
    targets = [t for i in range(len(recipe.eval_data)) for t in recipe.eval_data[i]["labels"][1:] if t != -100]
    assert all(r.metrics["target_id"] == pytest.approx(sum(targets) / len(targets)) for r in seen)
    first, last = seen[0].metrics["token_accuracy"], seen[-1].metrics["token_accuracy"]
    assert 0.0 <= first < last <= 1.0  # the mapping is learned: more next tokens right
    assert result.eval_metrics == seen[-1].metrics
    eval_lines = [line for line in reporter.lines if line.startswith("info eval step")]
    assert len(eval_lines) == 3 and all(" token_accuracy " in x and " target_id " in x for x in eval_lines)
    assert all(p.accuracy is None for p in reporter.points)  # the accuracy column is a classifier's

"""The evals before the last see a fixed sample of the validation split; the log has per-step lines."""

from __future__ import annotations

import re

import pytest

import worker.engine as engine
from app.core.spec import RunSpec, SpecError
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.engine import MemoryReporter, eval_plan, step_log_interval, train


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory):
    return write_mapping_csv(tmp_path_factory.mktemp("data") / "colours.csv")  # 60 rows -> 12 validation


def _run(spec_dict, tmp_path):
    reporter = MemoryReporter()
    result = train(RunSpec.from_dict(spec_dict), tmp_path / "out", reporter, tmp_path / "models")
    return result, reporter


def _eval_lines(reporter: MemoryReporter) -> list[str]:
    return [line for line in reporter.lines if line.startswith("info eval step")]


def test_evals_before_the_last_use_the_sample_and_the_last_the_whole_split(llama_dir, mapping_file, tmp_path):
    capped, rep = _run(mapping_spec(llama_dir, mapping_file, max_steps=4, eval_every=2, eval_samples=5),
                       tmp_path / "capped")
    assert "info eval: every eval before the last on 5 of 12 validation examples" in "\n".join(rep.lines)
    lines = _eval_lines(rep)
    assert [re.match(r"info eval step (\d+) on (.+?) validation", line).groups() for line in lines] == [
        ("0", "5 of 12"), ("2", "5 of 12"), ("4", "all 12")]
    assert "(the 5-example sample: " in lines[-1]
    assert [p.step for p in rep.points if p.split == "eval"] == [0, 2, 4]

    # The same run evaluating the whole split every time trains identically (evals draw no randomness):
    # its last eval equals the capped run's, its first differs from the capped run's sample.
    whole, rep_whole = _run(mapping_spec(llama_dir, mapping_file, max_steps=4, eval_every=2, eval_samples=0),
                            tmp_path / "whole")
    assert [re.search(r"on (.+?) validation", line).group(1) for line in _eval_lines(rep_whole)] == ["all 12"] * 3
    assert capped.last_eval_loss == pytest.approx(whole.last_eval_loss, rel=1e-4)
    assert capped.first_eval_loss != pytest.approx(whole.first_eval_loss, rel=1e-4)
    assert whole.last_sample_eval_loss == pytest.approx(whole.last_eval_loss, rel=1e-6)
    assert capped.last_sample_eval_loss != pytest.approx(capped.last_eval_loss, rel=1e-4)


def test_the_sample_is_fixed_by_the_seed_and_off_when_the_split_is_small():
    plan = eval_plan(403, 64, seed=42)
    assert len(plan.sample) == 64 and len(set(plan.sample)) == 64 and plan.sample == sorted(plan.sample)
    assert sorted(plan.sample + plan.rest) == list(range(403))
    assert eval_plan(403, 64, seed=42) == plan and eval_plan(403, 64, seed=7).sample != plan.sample
    assert eval_plan(64, 64, seed=42).sample is None and eval_plan(403, None, 1).sample is None
    assert eval_plan(403, 0, 1).sample is None


@pytest.mark.parametrize("value", ["many", -1, 2.5, True])
def test_a_bad_eval_samples_value_names_the_field(value, tmp_path):
    spec = mapping_spec(tmp_path, tmp_path / "data.csv", eval_samples=value)
    with pytest.raises(SpecError) as caught:
        RunSpec.from_dict(spec)
    assert caught.value.path == "training.eval_samples" and "whole validation split" in str(caught.value)


def test_eval_samples_defaults_to_a_cap_and_null_turns_it_off(tmp_path):
    assert RunSpec.from_dict(mapping_spec(tmp_path, tmp_path / "d.csv")).training.eval_samples == 64
    assert RunSpec.from_dict(mapping_spec(tmp_path, tmp_path / "d.csv", eval_samples=None)).training.eval_samples is None


def test_each_logged_step_gets_a_log_line_with_loss_lr_and_speed(llama_dir, mapping_file, tmp_path):
    _, rep = _run(mapping_spec(llama_dir, mapping_file, max_steps=4, eval_every=0), tmp_path)
    steps = [line for line in rep.lines if line.startswith("info step ")]
    assert [re.match(r"info step (\d+)/4: ", line).group(1) for line in steps] == ["1", "2", "3", "4"]
    pattern = r"info step \d+/4: loss \d+\.\d{4} · lr [0-9.e-]+ · [\d,]+ tokens/s · grad norm [0-9.e+-]+$"
    assert all(re.match(pattern, line) for line in steps), steps
    first_train = next(p for p in rep.points if p.split == "train")
    assert f"loss {first_train.loss:.4f}" in steps[0]


def test_long_runs_log_every_kth_step_but_keep_every_metric_point(llama_dir, mapping_file, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "STEP_LOG_LINES", 2)  # as if a 600-step run met the real cap of 100 lines
    _, rep = _run(mapping_spec(llama_dir, mapping_file, max_steps=6, eval_every=0), tmp_path)
    logged = [int(re.match(r"info step (\d+)/6", line).group(1)) for line in rep.lines if line.startswith("info step ")]
    assert logged == [1, 3, 6]
    assert [p.step for p in rep.points if p.split == "train"] == [1, 2, 3, 4, 5, 6]


def test_step_log_interval_stays_under_the_cap():
    assert step_log_interval(15, 1) == 1 and step_log_interval(100, 1) == 1
    assert step_log_interval(1000, 1) == 10 and step_log_interval(1000, 5) == 10 and step_log_interval(30, 5) == 5
    for total, every in ((1, 1), (99, 1), (101, 1), (5000, 3), (12345, 7)):
        interval = step_log_interval(total, every)
        assert interval % every == 0 and total // interval <= engine.STEP_LOG_LINES

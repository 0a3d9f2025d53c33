"""The worker keeps prepared data: a second run on the same data and settings tokenizes nothing.

Two runs go through the worker's ``execute_run`` (registry reporter, real engine, the studio's
``Settings``), so the test covers the path a queued run takes: ``worker.tasks`` hands the engine
``Settings.data_cache_dir`` and the engine's data stage prepares into it.
"""

from __future__ import annotations

from collections import Counter

import pytest
import transformers

from app.services import runs
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.tasks import execute_run


@pytest.fixture
def tokenizer_calls(monkeypatch) -> Counter:
    """Every call of any tokenizer that turns text into tokens or renders a chat, counted by name."""
    calls: Counter = Counter()
    base = transformers.PreTrainedTokenizerBase
    for name in ("__call__", "encode", "apply_chat_template"):
        original = getattr(base, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(base, name, counted)
    return calls


def _train(ctx, spec: dict) -> tuple[list[str], list[tuple]]:
    run_id = runs.create_run(ctx, spec)
    assert execute_run(run_id, ctx.settings, ctx.registry) == "succeeded"
    lines = [line.split(" ", 2)[2].strip() for line in runs.logs(ctx, run_id, tail=1000)]  # without time, level
    history = [(p.step, p.split, p.loss) for p in runs.metrics(ctx, run_id)]
    return lines, history


def test_a_second_run_through_the_worker_reads_the_cache_and_trains_the_same_examples(ctx, tmp_path, tokenizer_calls):
    llama = save_tiny_model(tmp_path / "llama")
    spec = mapping_spec(llama, write_mapping_csv(tmp_path / "colours.csv"), max_steps=6, eval_every=3)

    first_lines, first_history = _train(ctx, spec)
    tokenized = sum(tokenizer_calls.values())
    assert tokenized > 0  # the first run prepared its data
    entries = sorted(p.name for p in (ctx.settings.data_cache_dir / "prepared").iterdir())
    assert len(entries) == 1 and not any("cache" in line and "found" in line for line in first_lines)

    tokenizer_calls.clear()
    second_lines, second_history = _train(ctx, spec)

    assert sum(tokenizer_calls.values()) == 0, tokenizer_calls  # nothing tokenized, nothing rendered
    hit = [line for line in second_lines if "found in the cache" in line]
    assert len(hit) == 1 and entries[0][:12] in hit[0] and "nothing tokenized" in hit[0]
    assert sorted(p.name for p in (ctx.settings.data_cache_dir / "prepared").iterdir()) == entries
    # The same examples in the same order: the seeded runs' losses are equal, step for step.
    assert second_history == first_history and len(first_history) >= 6
    data_line = [line for line in first_lines if line.startswith("data: ") and "training /" in line]
    assert data_line and data_line[0] in second_lines

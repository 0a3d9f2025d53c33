"""The data step's training / validation figures are the ones the engine splits and logs.

One rule (``app.data.prepare.split_sizes`` over the rows left after removing repeats) serves the
preview and the engine; before, the preview guessed ("about 46 / 5") and the run log said 45 / 6.
"""

from __future__ import annotations

import re

import pytest

from app.core.settings import Settings
from app.core.spec import RunSpec
from app.data.pipeline import prepare_for_run
from app.services import data_preview
from app.services.context import Context
from tests.support.tiny_models import tokenizer
from worker.engine import MemoryReporter


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def _file(path, rows: int, distinct: int):
    lines = [f'{{"prompt": "question {i % distinct}", "completion": "answer {i % distinct}"}}' for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("rows,distinct,fraction,dedupe", [
    (56, 51, 0.1, True),    # the case: the preview said "about 46 / 5", the run 45 / 6
    (100, 30, 0.1, True),
    (100, 30, 0.1, False),
    (23, 23, 0.3, True),
    (40, 7, 0.25, True),
    (10, 10, 0.0, True),
    (3, 1, 0.5, True),      # one distinct row: nothing to hold out
])
def test_preview_split_equals_the_engines(ctx, tmp_path, rows, distinct, fraction, dedupe):
    path = _file(tmp_path / "data.jsonl", rows, distinct)
    tok = tokenizer("llama")
    view = data_preview.register_upload(ctx, path)
    prev = data_preview.preview(ctx, f"dataset:{view.id}", tokenizer=tok, max_length=32)
    shown = dict(data_preview.summary_rows(prev.stats, val_fraction=fraction, dedupe=dedupe))["Training / validation"]

    spec = RunSpec.from_dict({
        "name": "split", "model": {"name": str(tmp_path)},
        "data": {"dataset": str(path), "max_length": 32, "val_fraction": fraction, "dedupe": dedupe},
        "method": {"peft_type": "LORA", "target_modules": ["q_proj"]},
    })
    reporter = MemoryReporter()
    prepared, _ = prepare_for_run(spec, tok, lambda ref: path, reporter.log)
    engine = f"{len(prepared.train):,} / {len(prepared.eval):,}"
    assert shown == engine
    logged = next(line for line in reporter.lines if line.startswith("info data: ") and "validation rows" in line)
    assert re.search(r"data: ([\d,]+) training / ([\d,]+) validation rows", logged).groups() == tuple(
        engine.split(" / "))
    assert data_preview.split_figures(prev.stats, fraction, dedupe) == (len(prepared.train), len(prepared.eval))

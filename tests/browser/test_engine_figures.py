"""The engine's figures as a person meets them in Chromium: the data step's split and the method step's
trainable count equal the run log's, the log has a line per step and says what the capped step-0 eval
used, and the serve log carries no "add is_decoder=True" warning for the bundled MiniLM."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import shot, tab
from tests.browser.test_studio import choose_preset, field, pick, set_number, wait_until_final

pytestmark = pytest.mark.browser


def _figure(text: str, pattern: str) -> str:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return found.group(1)


def test_minilm_on_the_drug_reviews_shows_the_runs_own_figures(page, studio):
    page.goto(studio.url)
    tab(page, "new").click()
    pick(page, "model-bundled", re.compile("all-MiniLM-L6-v2"))
    page.locator("#model-check").click()
    page.locator("#model-info").get_by_text("BertModel").wait_for(timeout=90_000)
    page.locator("#model-next").click()

    pick(page, "data-bundled", re.compile("drug-reviews"))
    page.locator("#data-ok").wait_for(timeout=90_000)
    set_number(page, "data-max-length", 64)
    stats = page.locator("#data-stats")
    stats.get_by_text("Training / validation").wait_for(timeout=60_000)
    split = _figure(stats.inner_text(), r"Training / validation: ([\d,]+ / [\d,]+)")
    page.locator("#data-next").click()

    count = page.locator("#method-count")
    count.get_by_text("Trainable parameters").wait_for(timeout=90_000)
    page.wait_for_timeout(1000)  # the count reruns once the step is shown; read the settled figure
    trainable = _figure(count.inner_text(), r"Trainable parameters:?\s*([\d,]+)")
    shot(page, "engine-1-method-count")
    page.locator("#method-next").click()

    choose_preset(page, "quick")
    set_number(page, "train-max-steps", 3)
    field(page, "train-name").fill("engine-figures")
    page.locator("#train-submit").click()
    page.locator("#run-header").get_by_text("engine-figures").wait_for(timeout=60_000)
    wait_until_final(page, 400_000)
    log = page.locator("#run-log textarea")
    page.wait_for_function("() => /adapter saved/.test((document.querySelector('#run-log textarea') || {}).value || '')",
                           timeout=60_000)
    text = log.input_value()
    shot(page, "engine-2-run-log")

    train_rows, eval_rows = split.split(" / ")
    assert f"data: {train_rows} training / {eval_rows} validation rows" in text, text
    assert f"trainable parameters {trainable} of" in text, (trainable, text)
    assert f"eval step 0 on 64 of {eval_rows} validation examples" in text, text
    assert f"eval step 3 on all {eval_rows} validation examples" in text, text
    assert [int(s) for s in re.findall(r"step (\d+)/3: loss [\d.]+ · lr \S+ · [\d,]+ tokens/s", text)] == [1, 2, 3]
    assert "is_decoder" not in studio.log.read_text(errors="replace")

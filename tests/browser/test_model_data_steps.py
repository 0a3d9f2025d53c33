"""Steps 1 and 2 in Chromium: Next is refused (with the reason) while the model or the data is not
usable, the messages say what is wrong in the CLI's words, and the memory estimate reads as plain
words against the worker's memory."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shot, tab
from tests.browser.test_studio import field
from tests.engine.helpers import save_tiny_model
from tests.support.studio import ROOT

pytestmark = pytest.mark.browser


def open_wizard(page, studio) -> None:
    page.goto(studio.url)
    tab(page, "new").click()
    page.locator("#model-check").wait_for()


def test_next_is_refused_until_the_model_check_passes(page, studio, tmp_path):
    open_wizard(page, studio)
    missing = tmp_path / "no-such-model"
    field(page, "model-custom").fill(str(missing))
    page.locator("#model-check").click()
    error = page.locator("#model-error")
    expect(error).to_contain_text(f"no such folder: {missing}", timeout=30_000)
    assert "config.json" not in error.inner_text()

    page.locator("#model-next").click()
    expect(error).to_contain_text("Can't go on yet", timeout=30_000)
    expect(error).to_contain_text(f"no such folder: {missing}")
    shot(page, "model-data-01-next-refused")
    expect(page.locator("#data-upload")).to_be_hidden()
    expect(page.locator("#model-next")).to_be_visible()

    empty = tmp_path / "empty-folder"
    empty.mkdir()
    field(page, "model-custom").fill(str(empty))
    page.locator("#model-check").click()
    expect(error).to_contain_text("no config.json in that folder", timeout=30_000)

    # A model checked once, then a field changed to something unreadable: Next checks again.
    model_dir = save_tiny_model(tmp_path / "tiny-llama")
    field(page, "model-custom").fill(str(model_dir))
    page.locator("#model-check").click()
    page.locator("#model-info").get_by_text("LlamaForCausalLM").wait_for(timeout=60_000)
    field(page, "model-custom").fill(str(missing))
    page.locator("#model-next").click()
    expect(error).to_contain_text(f"no such folder: {missing}", timeout=30_000)
    expect(page.locator("#data-upload")).to_be_hidden()

    # Fixed: Next goes on without a separate check.
    field(page, "model-custom").fill(str(model_dir))
    page.locator("#model-next").click()
    expect(page.locator("#data-upload")).to_be_visible(timeout=60_000)
    expect(page.locator("#model-error")).to_have_count(0)


def cli_refusal(path, home) -> str:
    """What ``tunestudio datasets add`` says about ``path`` (its stderr without the "error: " prefix)."""
    env = dict(os.environ, TUNESTUDIO_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "datasets", "add", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    return re.sub(r"^error: ", "", proc.stderr.strip().splitlines()[-1])


def test_a_header_only_file_is_refused_in_the_clis_words(page, studio, tmp_path):
    header_only = tmp_path / "reviews.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    expected = cli_refusal(header_only, tmp_path / "cli-home")
    assert "no data rows" in expected

    open_wizard(page, studio)
    field(page, "model-custom").fill(str(save_tiny_model(tmp_path / "tiny-llama")))
    page.locator("#model-next").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(header_only))
    error = page.locator("#data-error")
    expect(error).to_have_text(expected, timeout=30_000)

    page.locator("#data-next").click()
    expect(error).to_contain_text(expected, timeout=30_000)
    assert "Upload a file" not in page.locator("#data-status").inner_text()
    expect(page.locator("#data-upload")).to_be_visible()
    expect(page.locator("#method-next")).to_be_hidden()
    shot(page, "model-data-02-header-only")


def test_memory_estimate_reads_as_plain_words_against_this_machines_memory(page, studio, tmp_path):
    from app.services.estimate import gib, worker_memory
    from tests.browser.test_studio import pick

    open_wizard(page, studio)
    field(page, "model-custom").fill(str(save_tiny_model(tmp_path / "tiny-llama")))
    page.locator("#model-check").click()
    table = page.locator("#model-estimate")
    # fp32 where the CPU has no bf16; on one that has it, "auto" trains in bf16 and stores the base so
    expect(table).to_contain_text(re.compile(r"Model weights \((full precision|stored in bf16)"), timeout=60_000)
    for part in ("Activations kept for the backward pass", "Scores over the vocabulary", "Total"):
        expect(table).to_contain_text(part)
    expect(page.locator("body")).not_to_contain_text("Bits per base weight")
    memory = worker_memory(embedded=True)  # the test studio's worker is embedded: it trains on this machine
    where = "the GPU" if memory.kind == "gpu" else "this machine's memory"
    fit = page.locator("#model-fit")
    expect(fit).to_contain_text(re.compile(rf"Fits: [\d.]+ of {gib(memory.total_bytes)} GiB of {where}"))
    expect(page.locator("#model-estimate-why")).to_contain_text("checked against measured peaks")

    pick(page, "model-quantization", "NF4 + double quantization (QLoRA)")
    expect(table).to_contain_text("Model weights (4-bit NF4", timeout=30_000)
    shot(page, "model-data-03-estimate")


def _logits_row(page):
    """The estimate's "scores over the vocabulary" row as a person (and a screen reader) reads it: the
    dataframe also keeps hidden copies of its cells. A classifier's is 0 B: it scores classes."""
    return page.locator("#model-estimate").get_by_role("row", name=re.compile(r"^Scores over the vocabulary"))


ZERO = re.compile(r"\s0 B\s*$")


def test_the_data_format_alone_refreshes_the_memory_estimate(page, studio, tmp_path):
    from tests.browser.test_studio import back, pick

    reviews = tmp_path / "reviews.csv"
    rows = [f"review number {i} was {'great' if i % 2 else 'awful'},{'good' if i % 2 else 'bad'}" for i in range(24)]
    reviews.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")

    open_wizard(page, studio)
    field(page, "model-custom").fill(str(save_tiny_model(tmp_path / "tiny-llama")))
    page.locator("#model-check").click()
    expect(page.locator("#model-estimate")).to_contain_text("Scores over the vocabulary", timeout=60_000)
    expect(_logits_row(page)).not_to_have_text(ZERO)  # no data yet: the model's own task, a language model
    language_model = re.search(r"[\d.]+ [KMG]iB\s*$", _logits_row(page).inner_text()).group(0).strip()

    # The upload is detected as classification: a classifier scores two classes, not the vocabulary.
    page.locator("#model-next").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(reviews))
    expect(page.locator("#data-shape input")).to_have_value("classification", timeout=60_000)
    back(page, "data")  # queued after the count and the estimate the format started
    expect(_logits_row(page)).to_have_text(ZERO, timeout=90_000)

    # Only the format changes (same model, method, batch and length): the estimate follows it.
    page.locator("#model-next").click()
    pick(page, "data-shape", "text")
    expect(page.locator("#data-shape input")).to_have_value("text")
    back(page, "data")
    expect(_logits_row(page)).to_have_text(re.compile(rf"\s{re.escape(language_model)}\s*$"), timeout=90_000)
    shot(page, "model-data-04-estimate-follows-format")

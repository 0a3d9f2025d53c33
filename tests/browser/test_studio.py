"""A new user's whole journey through the studio in Chromium: model, data (a bad file first), LoRA,
train a tiny model, watch the loss live, reload mid-run, download the adapter, try the playground."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
from playwright.sync_api import expect

from app.core.options import HEAD_LEARNING_RATE
from app.services.wizard import PRESETS
from app.ui.draft import STORAGE_KEY
from tests.browser.conftest import ARTIFACTS, shot, tab
from tests.engine.helpers import save_tiny_model

pytestmark = pytest.mark.browser

LIVE_STEPS = 300


def write_instruction_jsonl(path, rows: int = 48):
    things = ["sky", "grass", "snow", "coal", "sun", "sea", "milk", "leaf"]
    colours = ["blue", "green", "white", "black", "yellow", "blue", "white", "green"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            k = i % len(things)
            f.write(json.dumps({"instruction": f"Q{i}: what colour is the {things[k]}?", "input": "",
                                "output": colours[k]}) + "\n")
    return path


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")
    expect(box).to_have_value(str(value))


def pick(page, elem_id: str, option) -> None:
    """Choose an option of a dropdown the way a person does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option).click()
    page.keyboard.press("Escape")  # a multiselect stays open otherwise


def back(page, step: str) -> None:
    """Step ``step``'s Back button (each step has its own; the others stay in the page, hidden)."""
    page.locator(f"#{step}-back").click()


def check_local_model(page, studio, model_dir, architecture: str) -> None:
    """A fresh page on the wizard's first step with a local model folder checked."""
    page.goto(studio.url)
    tab(page, "new").click()
    field(page, "model-custom").fill(str(model_dir))
    page.locator("#model-check").click()
    page.locator("#model-info").get_by_text(architecture).wait_for(timeout=60_000)


def choose_preset(page, name: str) -> None:
    """Picking a preset rewrites the fields from the server; wait for that before typing over them (quick
    sets a number of steps sized by the data, the others train by epochs: no step limit)."""
    page.locator("#train-preset").get_by_label(name, exact=True).check()
    max_steps = page.locator("#train-max-steps input[type=number]").first
    if PRESETS[name].max_steps is None:
        expect(max_steps).to_have_value("0", timeout=30_000)
    else:
        expect(max_steps).not_to_have_value(re.compile(r"^0?$"), timeout=30_000)


def step_text(page) -> int:
    text = page.locator("#run-step").inner_text(timeout=30_000)
    return int(re.search(r"step (\d+)", text).group(1))


CHART_POINTS_JS = """() => { let n = 0;
    document.querySelectorAll('#run-chart path[aria-roledescription="line mark"]').forEach(p => {
        const d = p.getAttribute('d') || ''; if (d.startsWith('M')) n += (d.match(/L/g) || []).length + 1; });
    return n; }"""


def chart_points(page, more_than: int = 0) -> int:
    """Points the loss chart draws (one SVG path per series), waiting until there are more than given;
    the chart is re-embedded on each update, so a single look may fall between two drawings."""
    page.wait_for_function(f"() => ({CHART_POINTS_JS})() > {more_than}", timeout=60_000)
    return page.evaluate(CHART_POINTS_JS)


LEGEND_JS = """(id) => { const box = document.querySelector('#' + id).getBoundingClientRect();
    return Array.from(document.querySelectorAll('#' + id + ' g.role-legend text')).filter(t => {
        const r = t.getBoundingClientRect(); return r.height > 0 && r.bottom <= box.bottom && r.top >= box.top; })
        .map(t => t.textContent); }"""


STORED_DRAFT_JS = f"() => window.localStorage.getItem('{STORAGE_KEY}')"


def legend_in_view(page, elem_id: str) -> list[str]:
    """The legend labels drawn inside the chart's block (not clipped off its bottom)."""
    return page.evaluate(LEGEND_JS, elem_id)


def wait_until_final(page, timeout_ms: int) -> str:
    """The run's final status; fails at once (with the run's error) rather than waiting out a failed run."""
    page.wait_for_function(
        "() => /^(succeeded|failed|cancelled)$/.test((document.querySelector('#run-status') || {}).innerText || '')",
        timeout=timeout_ms,
    )
    status = page.locator("#run-status").inner_text()
    assert status == "succeeded", page.locator("#run-header").inner_text()
    return status


def test_new_user_trains_lora_and_tries_it(page, studio, tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny-llama")
    good = write_instruction_jsonl(tmp_path / "colours.jsonl")
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n', encoding="utf-8")

    page.goto(studio.url)
    page.locator("#model-check").wait_for()
    shot(page, "01-model-empty")

    # 1 · model: a local folder
    field(page, "model-custom").fill(str(model_dir))
    page.locator("#model-check").click()
    page.locator("#model-info").get_by_text("LlamaForCausalLM").wait_for(timeout=60_000)
    page.locator("#model-estimate").get_by_text("Total").wait_for(timeout=30_000)
    shot(page, "02-model-checked")
    page.locator("#model-next").click()

    # 2 · data: a bad file shows its message and the step stays usable; then a good file
    page.locator("#data-upload input[type=file]").set_input_files(str(bad))
    error = page.locator("#data-error")
    error.wait_for(timeout=30_000)
    assert "broken.jsonl" in error.inner_text() and "line 2" in error.inner_text()
    shot(page, "03-data-bad-file")
    page.locator("#data-upload button[aria-label*='Clear'], #data-upload button[aria-label*='clear']").first.click()
    page.locator("#data-upload input[type=file]").set_input_files(str(good))
    ok = page.locator("#data-ok")
    ok.wait_for(timeout=60_000)
    assert "instruction" in ok.inner_text() and "48 rows" in ok.inner_text()
    assert page.locator("#data-error").count() == 0
    page.locator("#data-preview").get_by_text("Q0: what colour is the sky?").first.wait_for()
    shot(page, "04-data-detected")
    page.locator("#data-next").click()

    # 3 · method: LoRA with its fields and a live trainable count
    page.locator("#method-count").get_by_text("Trainable parameters").wait_for(timeout=60_000)
    assert "LoRA" in page.locator("#method-choice").inner_text() or field(page, "method-choice").input_value()
    shot(page, "05-method-lora")
    page.locator("#method-next").click()

    # 4 · train: quick preset, long enough to watch it live
    choose_preset(page, "quick")
    set_number(page, "train-max-steps", LIVE_STEPS)
    field(page, "train-name").fill("browser-lora")
    shot(page, "06-train")
    page.locator("#train-submit").click()

    # run view: live chart and progress
    page.locator("#run-status").get_by_text("running").wait_for(timeout=90_000)
    first_step = step_text(page)
    page.wait_for_function("() => { const t = document.querySelector('#run-step'); "
                           f"return t && parseInt(t.innerText.match(/step (\\d+)/)[1]) > {first_step + 5}; }}",
                           timeout=60_000)
    points_before = chart_points(page)
    points_after = chart_points(page, more_than=points_before)  # the chart gains points while live
    assert page.locator("#run-status").get_by_text("running").count() == 1
    shot(page, "07-run-live")
    assert {"train", "train (smoothed)", "eval"} <= set(legend_in_view(page, "run-chart"))
    assert re.search(r"[?&]run=\d+", page.url), page.url
    assert points_after > points_before > 0

    # reload mid-run: the view comes back from the registry and keeps moving
    before_reload = step_text(page)
    page.reload()
    page.locator("#run-status").get_by_text("running").wait_for(timeout=30_000)
    after_reload = step_text(page)
    assert after_reload >= before_reload
    page.wait_for_function("() => { const t = document.querySelector('#run-step'); "
                           f"return t && parseInt(t.innerText.match(/step (\\d+)/)[1]) > {after_reload}; }}",
                           timeout=60_000)
    chart_points(page, more_than=0)
    shot(page, "08-run-after-reload")

    # closing the browser and coming back to the bare address: the run is shown again (still training,
    # or, on a fast machine, already finished)
    page.goto(studio.url)
    tab(page, "run").click()
    page.locator("#run-status").get_by_text(re.compile("running|succeeded")).wait_for(timeout=30_000)
    assert "browser-lora" in page.locator("#run-header").inner_text()
    assert step_text(page) >= after_reload

    wait_until_final(page, 150_000)
    assert step_text(page) == LIVE_STEPS
    shot(page, "09-run-done")
    with page.expect_download(timeout=30_000) as dl:
        page.locator("#run-download").click()
    zip_path = tmp_path / "adapter.zip"
    dl.value.save_as(zip_path)
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    config = json.loads(zipfile.ZipFile(zip_path).read("adapter_config.json"))
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"

    # merged model (LoRA merges): a plain transformers folder
    page.locator("#run-merge").click()
    with page.expect_download(timeout=60_000) as dl:
        page.locator("#run-merged").click()
    merged_zip = tmp_path / "merged.zip"
    dl.value.save_as(merged_zip)
    assert {"config.json", "model.safetensors"} <= set(zipfile.ZipFile(merged_zip).namelist())

    # runs: the table lists it; its full config is the YAML `tunestudio train` takes
    tab(page, "runs").click()
    page.wait_for_function("() => (document.querySelector('#runs-table') || {}).innerText?.includes('browser-lora')",
                           timeout=30_000)
    pick(page, "runs-selected", re.compile("browser-lora"))
    page.wait_for_function("() => (document.querySelector('#runs-config') || {}).innerText?.includes('peft_type: LORA')",
                           timeout=30_000)
    shot(page, "10-runs")

    # playground: base and tuned side by side
    tab(page, "playground").click()
    pick(page, "play-run", re.compile("browser-lora"))
    field(page, "play-prompt").fill("What colour is the sky?")
    page.locator("#play-generate").click()
    expect(page.locator("#play-status")).to_contain_text("Done:", timeout=120_000)
    shot(page, "11-playground")
    base = page.locator("#play-base [data-testid='bot']").last.inner_text()
    tuned = page.locator("#play-tuned [data-testid='bot']").last.inner_text()
    assert base and tuned
    (ARTIFACTS / "playground.txt").write_text(f"base: {base!r}\ntuned: {tuned!r}\n")


def test_classifier_from_a_demo_dataset_shows_label_probabilities(page, studio, tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny-bert", family="bert", task_type="SEQ_CLS")
    check_local_model(page, studio, model_dir, "BertForSequenceClassification")
    page.locator("#model-next").click()

    pick(page, "data-bundled", re.compile("drug-reviews"))
    ok = page.locator("#data-ok")
    ok.wait_for(timeout=90_000)
    assert "classification" in ok.inner_text()
    shot(page, "c1-data-demo")
    set_number(page, "data-max-length", 128)  # the tiny BERT has 256 positions
    page.locator("#data-next").click()
    page.locator("#method-count").get_by_text("Trainable parameters").wait_for(timeout=60_000)
    page.locator("#method-next").click()

    choose_preset(page, "quick")
    set_number(page, "train-max-steps", 12)
    # the new head learns at its own rate, shown and set under the advanced settings, and in the spec
    page.get_by_role("button", name=re.compile("Advanced training settings")).click()
    expect(page.locator("#train-head-lr input[type=number]").first).to_have_value(
        format(HEAD_LEARNING_RATE, "f").rstrip("0"), timeout=30_000)
    set_number(page, "train-head-lr", 0.005)
    page.get_by_role("button", name=re.compile("Equivalent spec")).click()
    expect(page.locator("#train-yaml")).to_contain_text("training:", timeout=30_000)
    # the editor draws the lines in view: scroll to the training section
    page.locator("#train-yaml .cm-scroller").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    expect(page.locator("#train-yaml")).to_contain_text("head_learning_rate: 0.005", timeout=30_000)
    shot(page, "c1b-train-head-rate")
    field(page, "train-name").fill("browser-classifier")
    page.locator("#train-submit").click()
    page.locator("#run-header").get_by_text("browser-classifier").wait_for(timeout=60_000)
    wait_until_final(page, 180_000)
    shot(page, "c2-run-done")

    tab(page, "playground").click()
    pick(page, "play-run", re.compile("browser-classifier"))
    field(page, "play-prompt").fill("This medicine worked well and I felt better within days.")
    page.locator("#play-generate").click()
    for elem_id in ("play-base-labels", "play-tuned-labels"):
        page.wait_for_function(
            f"() => /(negative|neutral|positive)/i.test((document.querySelector('#{elem_id}') || {{}}).innerText || '')",
            timeout=90_000,
        )
    shot(page, "c3-playground-labels")

    # runs: the compare chart draws the run's eval curve, named in a legend that is not clipped
    tab(page, "runs").click()
    pick(page, "runs-compare", re.compile("browser-classifier"))
    page.wait_for_function(f"() => ({LEGEND_JS})('runs-chart').some(t => /^#\\d+ eval$/.test(t))", timeout=30_000)
    shot(page, "c4-runs-compared")

    # and a new run from this one: the wizard opens on the train step with the run's choices
    pick(page, "runs-selected", re.compile("browser-classifier"))
    page.locator("#runs-reuse").click()
    expect(field(page, "train-name")).to_have_value(re.compile(r"^browser-classifier \(from #\d+\)$"),
                                                    timeout=30_000)
    expect(page.locator("#train-max-steps input[type=number]").first).to_have_value("12")
    expect(page.locator("#train-head-lr input[type=number]").first).to_have_value("0.005")
    assert "run=" not in page.url, page.url
    back(page, "train")
    back(page, "method")
    expect(page.locator("#data-ok")).to_contain_text("classification", timeout=60_000)
    expect(page.locator("#data-max-length input[type=number]").first).to_have_value("128")
    shot(page, "c5-new-run-from-old")


def test_a_reload_keeps_the_half_filled_wizard(page, studio, tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny-llama")
    data = write_instruction_jsonl(tmp_path / "colours.jsonl")
    check_local_model(page, studio, model_dir, "LlamaForCausalLM")
    pick(page, "model-quantization", "NF4 + double quantization (QLoRA)")
    page.locator("#model-next").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(data))
    page.locator("#data-ok").wait_for(timeout=60_000)
    page.locator("#data-next").click()
    page.locator("#method-count").get_by_text("Trainable parameters").wait_for(timeout=60_000)
    set_number(page, "method-lora-r", 16)
    page.locator("#method-next").click()
    choose_preset(page, "quick")
    before = page.evaluate(STORED_DRAFT_JS)
    field(page, "train-name").fill("kept-across-reload")
    field(page, "train-name").press("Tab")
    page.wait_for_function(f"(before) => ({STORED_DRAFT_JS})() !== before", arg=before)  # the last change is saved

    page.reload()
    expect(field(page, "train-name")).to_have_value("kept-across-reload", timeout=30_000)
    expect(field(page, "train-name")).to_be_visible()  # back on the tab and step the person left
    assert "run=" not in page.url, page.url  # the earlier tests' runs do not pull the page to the run view
    expect(page.locator("#train-max-steps input[type=number]").first).to_have_value("30")
    page.get_by_role("button", name=re.compile("Equivalent spec")).click()
    expect(page.locator("#train-yaml")).to_contain_text("precision: nf4", timeout=30_000)
    shot(page, "r1-train-after-reload")
    back(page, "train")
    expect(page.locator("#method-lora-r input[type=number]").first).to_have_value("16")
    expect(page.locator("#method-count")).to_contain_text("Trainable parameters", timeout=30_000)
    back(page, "method")
    expect(page.locator("#data-ok")).to_contain_text("48 rows", timeout=60_000)
    page.locator("#data-preview").get_by_text("Q0: what colour is the sky?").first.wait_for()
    back(page, "data")
    expect(field(page, "model-custom")).to_have_value(str(model_dir))
    expect(page.locator("#model-info")).to_contain_text("LlamaForCausalLM", timeout=60_000)
    expect(page.locator("#model-quantization input")).to_have_value("NF4 + double quantization (QLoRA)")
    shot(page, "r2-model-after-reload")

    assert page.evaluate(STORED_DRAFT_JS) is not None
    with page.expect_navigation():
        page.locator("#wizard-start-over").click()
    page.locator("#model-next").wait_for()
    expect(field(page, "model-custom")).to_have_value("", timeout=30_000)
    assert page.evaluate(STORED_DRAFT_JS) is None  # the draft is gone, not just hidden
    page.reload()
    page.locator("#model-next").wait_for()
    expect(field(page, "model-custom")).to_have_value("")
    expect(page.locator("#model-quantization input")).to_have_value("None (full precision)")

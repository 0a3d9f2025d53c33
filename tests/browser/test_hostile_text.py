"""Text from data or a person shows as text in Chromium: hostile label values, column names, a dataset's
file name and a run's name, model and error make no element of the page (no image fetched, no link,
no script, no bold) and no request outside the studio's address; they read exactly as written."""

from __future__ import annotations

import csv
import urllib.parse

import pytest
from playwright.sync_api import expect

from app.core.refs import registered_ref
from app.core.settings import Settings
from app.core.spec import DataSpec, ModelSpec, RunSpec
from app.registry.models import Run, utcnow
from app.services import list_datasets
from app.services.context import Context
from tests.browser.conftest import shot, tab
from tests.browser.test_studio import field
from tests.engine.helpers import save_tiny_model

pytestmark = pytest.mark.browser

LABELS = ["<img src=http://127.0.0.1:9/x onerror=alert(1)>", "[click](http://example.com)", "**bold**"]
COLUMN = "<b>note</b>"
FILE_NAME = "<u>data [d](x) **b**.csv"  # a file name may hold all of it but a slash
RUN_NAME = "<script>alert(1)</script> run"
RUN_MODEL = "[m](http://example.com/m)"
RUN_ERROR = "<img src=http://127.0.0.1:9/e onerror=alert(2)> ![e](http://127.0.0.1:9/e.png)"
DEAD_LINK = "\n\n![l](http://127.0.0.1:9/l.png) [l](http://example.com/l)"

# Whatever the hostile values could have become; each list must stay empty.
MADE_FROM_THEM = """() => {
  const texts = (sel, words) => [...document.querySelectorAll(sel)].map(e => e.textContent.trim())
    .filter(t => words.includes(t));
  return {
    images: [...document.querySelectorAll('img')].map(i => i.getAttribute('src') || '')
      .filter(s => s.includes('127.0.0.1:9') || s === 'x'),
    handlers: [...document.querySelectorAll('[onerror]')].map(e => e.outerHTML.slice(0, 80)),
    links: [...document.querySelectorAll('a')].filter(a => /example\\.com|^x$|127\\.0\\.0\\.1:9/.test(
      a.getAttribute('href') || '') || ['click', 'd', 'm', 'e', 'l'].includes(a.textContent.trim()))
      .map(a => a.outerHTML.slice(0, 80)),
    scripts: [...document.querySelectorAll('script')].filter(s => s.textContent.includes('alert('))
      .map(s => s.outerHTML.slice(0, 80)),
    bold: texts('b, strong, em, u', ['note', 'bold', 'b', 'data [d](x) **b**.csv']),
    maths: [...document.querySelectorAll('.katex')].map(e => e.textContent.slice(0, 40)),
  };
}"""


def nothing_made(page) -> None:
    made = page.evaluate(MADE_FROM_THEM)
    assert made == {key: [] for key in made}, made
    assert page.requests.outside() == []  # nothing fetched from 127.0.0.1:9 or example.com


def hostile_csv(folder):
    path = folder / FILE_NAME
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", COLUMN])
        for i in range(12):
            writer.writerow([f"review number {i}", LABELS[i % 3], f"n{i}"])
    return path


def seed_run(home) -> int:
    """A failed run named, modelled and erroring with hostile text, reading the hostile dataset."""
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(home)}))
    try:
        [dataset] = [d for d in list_datasets(ctx) if d.name == FILE_NAME]
        spec = RunSpec(name=RUN_NAME, model=ModelSpec(name="org/tiny-llama"),
                       data=DataSpec(dataset=registered_ref(dataset.id)),
                       method={"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "attention"})
        with ctx.session() as s:
            run = Run(name=RUN_NAME, status="failed", spec=spec.to_dict(), model=RUN_MODEL, method="LORA",
                      error=RUN_ERROR, started_at=utcnow(), finished_at=utcnow())
            s.add(run)
            s.commit()
            return run.id
    finally:
        ctx.close()


def test_hostile_labels_columns_and_names_show_as_text(page, studio, tmp_path):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # The data step: labels in the statistics, the column among the ignored ones and in the preview.
    page.goto(studio.url)
    tab(page, "new").click()
    field(page, "model-custom").fill(str(save_tiny_model(tmp_path / "tiny-llama")))
    page.locator("#model-next").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(hostile_csv(tmp_path)))
    ok = page.locator("#data-ok")
    expect(ok).to_contain_text("12 rows", timeout=90_000)
    stats = page.locator("#data-stats")
    expect(stats).to_contain_text("Label balance", timeout=90_000)
    for label in LABELS:
        expect(stats).to_contain_text(label)
        expect(page.locator("#data-preview")).to_contain_text(label)
    expect(ok).to_contain_text(FILE_NAME)
    expect(ok).to_contain_text(f"ignored columns: {COLUMN}")
    expect(page.locator("#data-preview")).to_contain_text(COLUMN)
    shot(page, "hostile-01-data")
    nothing_made(page)
    page.locator("#data-next").click()
    expect(page.locator("#method-count")).to_contain_text("Trainable parameters", timeout=90_000)
    nothing_made(page)

    # A run with a hostile name, model and error, reading that dataset: run view, runs tab, datasets tab.
    run_id = seed_run(studio.home)
    page.goto(f"{studio.url}/?run={run_id}")
    header = page.locator("#run-header")
    expect(header).to_contain_text(RUN_NAME, timeout=60_000)
    for text in (RUN_MODEL, RUN_ERROR, FILE_NAME):
        expect(header).to_contain_text(text)
    shot(page, "hostile-02-run-view")
    nothing_made(page)

    tab(page, "runs").click()
    expect(page.locator("#runs-table")).to_contain_text(RUN_NAME, timeout=60_000)
    expect(page.locator("#runs-table")).to_contain_text(FILE_NAME)
    nothing_made(page)

    tab(page, "datasets").click()
    expect(page.locator("#datasets-table")).to_contain_text(FILE_NAME, timeout=60_000)
    expect(page.locator("#datasets-table")).to_contain_text(f"#{run_id} failed")
    shot(page, "hostile-03-datasets")
    nothing_made(page)

    # A crafted link: its run id is quoted back as text (line breaks and all), never as Markdown.
    page.goto(f"{studio.url}/?run={urllib.parse.quote(DEAD_LINK)}")
    message = page.locator("#run-message")
    expect(message).to_contain_text("![l](http://127.0.0.1:9/l.png) [l](http://example.com/l)", timeout=60_000)
    nothing_made(page)
    assert dialogs == []

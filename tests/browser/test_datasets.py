"""Storage in Chromium: an upload leaves no copy in Gradio's temp folder once it is stored or refused
(and Next still goes on, or repeats the refusal), and the Datasets tab lists a dataset with its size
and runs and deletes it, refused in the CLI's words while a running run reads it."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from app.core.refs import registered_ref
from app.core.settings import Settings
from app.registry.models import Run, utcnow
from app.services import DatasetInUse, add_dataset, delete_dataset, list_datasets
from app.services.context import Context
from app.services.estimate import human_bytes
from tests.browser.conftest import shot, tab
from tests.browser.test_studio import field
from tests.engine.helpers import save_tiny_model

pytestmark = pytest.mark.browser


def gradio_temp(studio) -> Path:
    """The studio's Gradio temp folder (``serve`` puts it in the artifacts folder unless the environment names one)."""
    settings = Settings.from_env({"TUNESTUDIO_HOME": str(studio.home)})
    return Path(os.environ.get("GRADIO_TEMP_DIR") or settings.artifacts_dir / "uploads-tmp")


def copies_in(folder: Path, content: bytes) -> list[str]:
    """Files in Gradio's temp folder holding the upload's bytes, and empty files (what Gradio's own
    filepath preprocessing leaves per event)."""
    return [str(p) for p in folder.rglob("*")
            if p.is_file() and (p.stat().st_size == 0 or p.read_bytes() == content)]


def studio_ctx(studio) -> Context:
    return Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(studio.home)}))


def test_uploads_leave_no_temp_copy_and_next_still_works(page, studio, tmp_path):
    refused, good = tmp_path / "refused.csv", tmp_path / "reviews.csv"
    refused.write_bytes(b"text,label\n")
    good.write_bytes(b"text,label\n" + b"".join(f"review {i},{'pos' if i % 2 else 'neg'}\n".encode() for i in range(10)))
    temp = gradio_temp(studio)

    page.goto(studio.url)
    tab(page, "new").click()
    field(page, "model-custom").fill(str(save_tiny_model(tmp_path / "tiny-llama")))
    page.locator("#model-next").click()

    # Refused: no copy left, and Next repeats the refusal (the file is not read again).
    page.locator("#data-upload input[type=file]").set_input_files(str(refused))
    error = page.locator("#data-error")
    expect(error).to_contain_text("no data rows", timeout=60_000)
    assert temp.is_dir()  # Gradio did write the upload there
    assert copies_in(temp, refused.read_bytes()) == []
    page.locator("#data-next").click()
    expect(error).to_contain_text("no data rows", timeout=30_000)
    expect(page.locator("#method-next")).to_be_hidden()

    # Stored: no copy left, the studio's own copy kept, and Next goes on.
    page.locator("#data-upload button[aria-label*='Clear'], #data-upload button[aria-label*='clear']").first.click()
    page.locator("#data-upload input[type=file]").set_input_files(str(good))
    expect(page.locator("#data-ok")).to_contain_text("10 rows", timeout=60_000)
    assert copies_in(temp, good.read_bytes()) == []
    ctx = studio_ctx(studio)
    try:
        [stored] = [d for d in list_datasets(ctx) if d.name == "reviews.csv"]
        assert Path(stored.path).read_bytes() == good.read_bytes()
    finally:
        ctx.close()
    page.locator("#data-next").click()
    expect(page.locator("#method-count")).to_contain_text("Trainable parameters", timeout=90_000)
    shot(page, "datasets-01-next-after-upload")


def test_the_datasets_tab_deletes_a_dataset_once_no_run_reads_it(page, studio, tmp_path):
    path = tmp_path / "to-delete.csv"
    path.write_text("text,label\n" + "".join(f"line {i},{'a' if i % 2 else 'b'}\n" for i in range(7)), encoding="utf-8")
    ctx = studio_ctx(studio)
    try:
        dataset = add_dataset(ctx, path, name="to-delete.csv")
        spec = {"name": "reader", "model": {"name": "org/tiny"}, "data": {"dataset": registered_ref(dataset.id)},
                "method": {"peft_type": "LORA"}, "training": {}}
        with ctx.session() as s:
            # Running, its heartbeat ahead of the clock: neither the embedded worker nor the lost-worker
            # check touches it while the test looks (a seeded queued run would be picked up and fail).
            run = Run(name="reader", status="running", spec=spec, model="org/tiny", method="LORA",
                      started_at=utcnow(), heartbeat_at=utcnow() + timedelta(hours=1))
            s.add(run)
            s.commit()
            run_id = run.id
        with pytest.raises(DatasetInUse) as refused:  # what `tunestudio datasets delete` says
            delete_dataset(ctx, dataset.id)
    finally:
        ctx.close()

    # An active run brings the run view to the front as the page loads: let it, then open the tab.
    page.goto(f"{studio.url}/?run={run_id}")
    expect(page.locator("#run-header")).to_contain_text("reader", timeout=60_000)
    tab(page, "datasets").click()
    table = page.locator("#datasets-table")
    expect(table).to_contain_text("to-delete.csv", timeout=60_000)
    expect(table).to_contain_text(human_bytes(path.stat().st_size))
    expect(table).to_contain_text(f"#{run_id} running")
    page.locator("#datasets-selected input").click()
    page.locator("#datasets-selected").get_by_role("option", name=re.compile(rf"^#{dataset.id} to-delete\.csv")).click()
    page.locator("#datasets-confirm input").check()
    page.locator("#datasets-delete").click()
    expect(page.locator("#datasets-error")).to_have_text(str(refused.value), timeout=30_000)
    shot(page, "datasets-02-refused")
    assert Path(dataset.path).is_file()

    ctx = studio_ctx(studio)
    try:
        with ctx.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(status="cancelled"))
            s.commit()
    finally:
        ctx.close()
    page.locator("#datasets-delete").click()  # the pick stays after a refusal
    expect(page.locator("#datasets-message")).to_contain_text(f"Dataset #{dataset.id} and its stored file were deleted.",
                                                              timeout=30_000)
    expect(table).not_to_contain_text("to-delete.csv", timeout=30_000)
    shot(page, "datasets-03-deleted")
    ctx = studio_ctx(studio)
    try:
        assert dataset.id not in [d.id for d in list_datasets(ctx)]
    finally:
        ctx.close()
    assert not Path(dataset.path).exists()

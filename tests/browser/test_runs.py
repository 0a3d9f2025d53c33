"""The run view and the Runs tab in Chromium, on runs seeded straight into the studio's registry.

Training is not what these tests are about (test_studio.py trains for real), so each run is written
with the registry's own models — spec, status, metric points, log lines — before the page opens;
the page then reads them exactly as it reads a worker's writes.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from app.core.settings import Settings
from app.core.spec import DataSpec, ModelSpec, RunSpec, TrainingSpec
from app.registry.models import Artifact, LogLine, MetricPoint, Run, utcnow
from app.services.context import Context
from tests.browser.conftest import shot, tab
from tests.browser.test_studio import LEGEND_JS, STORED_DRAFT_JS, field, legend_in_view, pick

pytestmark = pytest.mark.browser

LORA = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "attention"}


def seed_run(home, name: str, *, method: dict | None = None, precision: str = "full", status: str = "succeeded",
             train=(), evals=(), logs=(), lr: float = 2e-4, max_steps: int = 30) -> int:
    """A run as a worker would have left it: the spec, a status, its metric points and log lines."""
    spec = RunSpec(name=name, model=ModelSpec(name="org/tiny-llama", precision=precision),
                   data=DataSpec(dataset="colours.jsonl"), method=dict(method or LORA),
                   training=TrainingSpec(learning_rate=lr, max_steps=max_steps))
    spec.validate()
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(home)}))
    try:
        with ctx.session() as s:
            now = utcnow()
            active = status in ("running", "cancelling")
            run = Run(name=name, status=status, spec=spec.to_dict(), model=spec.model.name,
                      method=spec.method["peft_type"], step=max([p[0] for p in train] or [0]), total_steps=max_steps,
                      started_at=now - timedelta(seconds=30), heartbeat_at=now if active else None,
                      finished_at=None if active else now)
            s.add(run)
            s.flush()
            for step, loss in train:
                s.add(MetricPoint(run_id=run.id, step=step, epoch=step / max_steps, split="train", loss=loss))
            for step, loss in evals:
                s.add(MetricPoint(run_id=run.id, step=step, epoch=step / max_steps, split="eval", loss=loss))
            for message in logs:
                s.add(LogLine(run_id=run.id, message=message))
            s.commit()
            return run.id
    finally:
        ctx.close()


def add_log_lines(home, run_id: int, messages) -> None:
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(home)}))
    try:
        with ctx.session() as s:
            s.add_all([LogLine(run_id=run_id, message=m) for m in messages])
            s.commit()
    finally:
        ctx.close()


def open_run(page, studio, run_id: int, name: str) -> None:
    page.goto(f"{studio.url}/?run={run_id}")
    expect(page.locator("#run-header")).to_contain_text(name, timeout=60_000)


LINE_MARKS = """(id) => Array.from(document.querySelectorAll('#' + id + ' path[aria-roledescription="line mark"]'))
    .map(p => ({label: p.getAttribute('aria-label') || '', points: (p.getAttribute('d') || '').startsWith('M')
        ? (p.getAttribute('d').match(/L/g) || []).length + 1 : 0, stroke: p.getAttribute('stroke'),
        marker: getComputedStyle(p).markerStart}))"""


def series_points(page, elem_id: str) -> dict[str, int]:
    """Points drawn per series of a chart (its line paths), keyed by the series name."""
    return {m["label"].rsplit("series: ", 1)[-1]: m["points"] for m in page.evaluate(LINE_MARKS, elem_id)}


def pixels_of(png: bytes, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(png)).convert("RGB")
    return sum(1 for px in image.getdata() if all(abs(a - b) <= tolerance for a, b in zip(px, colour)))


def test_compare_two_runs_draws_both_curves(page, studio):
    first = seed_run(studio.home, "compare-a", train=[(s, 3.0 - s / 10) for s in range(1, 21)],
                     evals=[(0, 3.2), (10, 2.5), (20, 2.0)])
    second = seed_run(studio.home, "compare-b", train=[(s, 2.8 - s / 12) for s in range(1, 21)],
                      evals=[(0, 3.1), (10, 2.2), (20, 1.6)])
    page.goto(studio.url)
    tab(page, "runs").click()
    expect(page.locator("#runs-table")).to_contain_text("compare-b", timeout=60_000)
    # Ticked as a person does: open the list, tick one, then the other (the list stays open).
    page.locator("#runs-compare input").click()
    options = page.locator("#runs-compare").get_by_role("option")
    options.filter(has_text=re.compile(rf"^\W*#{first} ")).click()
    page.wait_for_function(f"() => ({LEGEND_JS})('runs-chart').includes('#{first} eval')", timeout=30_000)
    options.filter(has_text=re.compile(rf"^\W*#{second} ")).click()
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => ({LEGEND_JS})('runs-chart').includes('#{second} eval')", timeout=30_000)
    page.wait_for_function(f"() => ({LINE_MARKS})('runs-chart').length === 2", timeout=30_000)
    shot(page, "runs-compare-two")
    assert {f"#{first} eval", f"#{second} eval"} <= set(legend_in_view(page, "runs-chart"))
    assert series_points(page, "runs-chart") == {f"#{first} eval": 3, f"#{second} eval": 3}
    strokes = {m["stroke"] for m in page.evaluate(LINE_MARKS, "runs-chart")}
    assert len(strokes) == 2  # two colours, one per run

    # unticking one leaves the other's curve alone on the chart
    page.locator("#runs-compare .token").filter(has_text=f"#{first} ").locator(".token-remove").click()
    page.wait_for_function(f"() => ({LINE_MARKS})('runs-chart').length === 1", timeout=30_000)
    assert series_points(page, "runs-chart") == {f"#{second} eval": 3}


def test_a_link_to_a_run_opens_it_in_a_fresh_browser_and_keeps_the_address(page, studio):
    run_id = seed_run(studio.home, "linked-run", train=[(1, 2.0), (2, 1.8)], evals=[(2, 1.9)])
    seed_run(studio.home, "a-newer-run", train=[(1, 2.0)])  # the link, not the newest run, is shown
    open_run(page, studio, run_id, "linked-run")
    expect(tab(page, "run")).to_have_attribute("aria-selected", "true")
    page.wait_for_timeout(2_000)  # the page has settled: nothing strips the address afterwards
    assert re.search(rf"[?&]run={run_id}(&|$)", page.url), page.url
    expect(page.locator("#run-header")).to_contain_text("linked-run")
    shot(page, "run-linked")

    # a half-filled wizard waiting in this browser does not win over an explicit link
    tab(page, "new").click()
    # leaving the run view takes the run off the address (the page's script does it after the tab changes)
    expect(page).not_to_have_url(re.compile(r"[?&]run="), timeout=10_000)
    before = page.evaluate(STORED_DRAFT_JS)
    field(page, "model-custom").fill("/some/folder")
    field(page, "model-custom").press("Tab")
    page.wait_for_function(f"(before) => ({STORED_DRAFT_JS})() !== before", arg=before)
    open_run(page, studio, run_id, "linked-run")
    expect(tab(page, "run")).to_have_attribute("aria-selected", "true")
    page.wait_for_timeout(2_000)
    assert re.search(rf"[?&]run={run_id}(&|$)", page.url), page.url
    tab(page, "new").click()
    expect(field(page, "model-custom")).to_have_value("/some/folder")  # and the draft is still there

    # a link to a run that is gone says so, instead of Gradio's "not in the list of choices" error
    page.goto(f"{studio.url}/?run=987654")
    expect(page.locator("#run-message")).to_contain_text("run #987654, which does not exist", timeout=60_000)
    expect(page.locator("#run-header")).to_contain_text("No run selected")
    assert page.locator(".toast-body").count() == 0


def test_header_and_table_name_the_full_recipe(page, studio):
    dora = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_dora": True, "target_modules": "attention"}
    run_id = seed_run(studio.home, "qdora-run", method=dora, precision="nf4", lr=1e-4, max_steps=40,
                      train=[(1, 2.0), (2, 1.9)])
    recipe = "LoRA (DoRA) · r 16, alpha 32 · NF4 + double quant, bf16 where supported · lr 1e-4, 40 steps, batch 8"
    open_run(page, studio, run_id, "qdora-run")
    expect(page.locator("#run-recipe")).to_have_text(recipe)
    expect(page.locator("#run-picker input")).to_have_value(re.compile(r"LoRA \(DoRA\), NF4 \+ double quant"))
    shot(page, "run-recipe-header")
    tab(page, "runs").click()
    row = page.locator("#runs-table").get_by_role("row").filter(has_text="qdora-run")
    expect(row).to_contain_text("LoRA (DoRA)", timeout=60_000)
    expect(row).to_contain_text("NF4 + double quant")
    expect(row).to_contain_text("r 16, alpha 32")
    field(page, "runs-filter-text").fill("dora")
    field(page, "runs-filter-text").press("Enter")
    expect(page.locator("#runs-table")).not_to_contain_text("linked-run", timeout=30_000)
    expect(page.locator("#runs-table")).to_contain_text("qdora-run")
    shot(page, "runs-recipe-table")


def test_one_point_is_drawn_and_the_log_follows_its_end(page, studio):
    run_id = seed_run(studio.home, "one-point", status="running", train=[(1, 2.5)], evals=[(0, 2.7)],
                      logs=[f"step {i}: loss {3 - i / 100:.3f}" for i in range(1, 61)])
    open_run(page, studio, run_id, "one-point")
    page.wait_for_function(f"() => ({LINE_MARKS})('run-chart').filter(m => m.points > 0).length === 3",
                           timeout=30_000)
    assert series_points(page, "run-chart") == {"train": 1, "train (smoothed)": 1, "eval": 1,
                                                "best checkpoint": 0}  # named, no eval ranked yet
    assert {m["marker"] for m in page.evaluate(LINE_MARKS, "run-chart")
            if not m["label"].endswith("best checkpoint")} == {'url("#ts-point")'}  # that one: a ring (#ts-best)
    # The single eval point is visible on the plot itself (the legend, which has the colour too, hidden).
    page.evaluate("() => document.querySelectorAll('#run-chart g.role-legend').forEach(g => g.style.display = 'none')")
    assert pixels_of(page.locator("#run-chart").screenshot(), (0xEA, 0x58, 0x0C), tolerance=30) >= 20
    page.evaluate("() => document.querySelectorAll('#run-chart g.role-legend').forEach(g => g.style.display = '')")
    shot(page, "run-one-point")

    at_end = "() => { const t = document.querySelector('#run-log textarea'); " \
             "return t.scrollHeight > t.clientHeight && t.scrollTop + t.clientHeight >= t.scrollHeight - 2; }"
    page.wait_for_function(at_end, timeout=30_000)
    add_log_lines(studio.home, run_id, [f"step {i}: loss {3 - i / 100:.3f}" for i in range(61, 66)])
    expect(field(page, "run-log")).to_have_value(re.compile(r"step 65: loss 2\.350$"), timeout=30_000)
    page.wait_for_function(at_end, timeout=30_000)  # it followed the new lines to the end

    # scrolled up to read, it stays put while lines arrive
    page.evaluate("() => { document.querySelector('#run-log textarea').scrollTop = 0; }")
    add_log_lines(studio.home, run_id, ["step 66: loss 2.340"])
    expect(field(page, "run-log")).to_have_value(re.compile(r"step 66: loss 2\.340$"), timeout=30_000)
    page.wait_for_timeout(1_500)
    assert page.evaluate("() => document.querySelector('#run-log textarea').scrollTop") == 0


def test_the_cancelling_message_goes_when_another_run_is_shown(page, studio):
    other = seed_run(studio.home, "finished-run", train=[(1, 2.0), (2, 1.5)])
    run_id = seed_run(studio.home, "to-cancel", status="running", train=[(1, 2.0)])
    open_run(page, studio, run_id, "to-cancel")
    page.locator("#run-cancel").click()
    expect(page.locator("#run-message")).to_contain_text(f"Run #{run_id}: cancelling", timeout=30_000)
    pick(page, "run-picker", re.compile(rf"^#{other} "))
    expect(page.locator("#run-header")).to_contain_text("finished-run", timeout=30_000)
    expect(page.locator("#run-message")).to_have_text("", timeout=10_000)
    shot(page, "run-switched-after-cancel")
    # and coming back to the cancelled run does not bring the stale message back either
    pick(page, "run-picker", re.compile(rf"^#{run_id} "))
    expect(page.locator("#run-header")).to_contain_text("to-cancel", timeout=30_000)
    expect(page.locator("#run-message")).to_have_text("")


def add_adapters(home, run_id: int, folders: dict[str, tuple[str, int]]) -> None:
    """Adapter folders as the worker leaves them (kind -> (folder under the run's, step)), registered."""
    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(home)}))
    try:
        with ctx.session() as s:
            for kind, (name, step) in folders.items():
                folder = ctx.settings.run_dir(run_id) / name
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "adapter_model.safetensors").write_bytes(f"{kind} weights".encode())
                s.add(Artifact(run_id=run_id, kind=kind, path=str(folder), step=step, bytes=1, sha256="0" * 64))
            s.commit()
    finally:
        ctx.close()


PATH_POINTS = """(id) => Object.fromEntries(Array.from(document.querySelectorAll(
    '#' + id + ' path[aria-roledescription="line mark"]')).map(p => [
        (p.getAttribute('aria-label') || '').split('series: ').pop(),
        ((p.getAttribute('d') || '').match(/-?[\\d.]+(e-?\\d+)?,-?[\\d.]+(e-?\\d+)?/g) || [])
            .map(xy => xy.split(',').map(Number))]))"""


def test_the_best_eval_is_marked_on_the_chart_named_under_the_progress_and_the_last_adapter_offered(page, studio):
    run_id = seed_run(studio.home, "best-marked", train=[(s, 3.0 - s / 20) for s in range(1, 21)],
                      evals=[(0, 3.0), (10, 1.5), (20, 1.8)])
    add_adapters(studio.home, run_id, {"best_adapter": ("best/step-10", 10), "adapter": ("adapter", 20)})
    open_run(page, studio, run_id, "best-marked")

    expect(page.locator("#run-best")).to_have_text("Best eval loss 1.5000 at step 10 (kept as the adapter)",
                                                   timeout=30_000)
    page.wait_for_function(f"() => ({LINE_MARKS})('run-chart').some(m => m.label.endsWith('best checkpoint') "
                           "&& m.points > 0)", timeout=30_000)
    marks = {m["label"].rsplit("series: ", 1)[-1]: m for m in page.evaluate(LINE_MARKS, "run-chart")}
    assert marks["best checkpoint"]["points"] == 1 and marks["best checkpoint"]["marker"] == 'url("#ts-best")'
    # the ring sits on the eval curve's middle point (step 10), not on its lowest-drawn or last one
    points = page.evaluate(PATH_POINTS, "run-chart")
    (x, y), = points["best checkpoint"]
    eval_points = points["eval"]
    assert len(eval_points) == 3 and abs(x - eval_points[1][0]) < 0.5 and abs(y - eval_points[1][1]) < 0.5
    # drawn: the ring's green shows on the plot itself (the legend, which has the colour too, hidden)
    page.evaluate("() => document.querySelectorAll('#run-chart g.role-legend').forEach(g => g.style.display = 'none')")
    assert pixels_of(page.locator("#run-chart").screenshot(), (0x04, 0x78, 0x57), tolerance=40) >= 20
    page.evaluate("() => document.querySelectorAll('#run-chart g.role-legend').forEach(g => g.style.display = '')")

    expect(page.locator("#run-download")).to_be_visible()
    expect(page.locator("#run-download-last")).to_be_visible()
    shot(page, "run-best-marker")

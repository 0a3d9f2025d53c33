"""The playground in Chromium after a short real run: the run is picked for you, the two models chat
side by side over several turns, and a status line says what is happening while they answer."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import shot, tab
from tests.browser.test_studio import (
    check_local_model,
    choose_preset,
    field,
    pick,
    set_number,
    wait_until_final,
    write_instruction_jsonl,
)
from tests.engine.helpers import save_tiny_model

pytestmark = pytest.mark.browser

# Every text the status line shows, recorded by the page itself: a model that answers in a second
# would otherwise finish between two looks from the test.
WATCH_STATUS_JS = """() => {
    window.__statusSeen = [];
    const box = document.querySelector('#play-status');
    const note = () => { const text = box.innerText.trim(); if (text) window.__statusSeen.push(text); };
    new MutationObserver(note).observe(box, {subtree: true, childList: true, characterData: true});
}"""

PENDING_TIMER = re.compile(r"^[\d.]+s\s+")

MESSAGES_JS = """(id) => Array.from(document.querySelectorAll('#' + id + ' [data-testid="user"], #' + id
    + ' [data-testid="bot"]')).map(m => [m.getAttribute('data-testid'), m.innerText.trim()])"""


def train_tiny_run(page, studio, tmp_path, name: str) -> None:
    model_dir = save_tiny_model(tmp_path / "tiny-llama")
    data = write_instruction_jsonl(tmp_path / "colours.jsonl", rows=16)
    check_local_model(page, studio, model_dir, "LlamaForCausalLM")
    page.locator("#model-next").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(data))
    page.locator("#data-ok").wait_for(timeout=60_000)
    page.locator("#data-next").click()
    page.locator("#method-count").get_by_text("Trainable parameters").wait_for(timeout=60_000)
    page.locator("#method-next").click()
    choose_preset(page, "quick")
    set_number(page, "train-max-steps", 4)
    field(page, "train-name").fill(name)
    page.locator("#train-submit").click()
    page.locator("#run-header").get_by_text(name).wait_for(timeout=60_000)
    wait_until_final(page, 180_000)


def send(page, text: str) -> list[str]:
    """Send one message and wait until both columns have answered; the statuses seen meanwhile."""
    page.evaluate(WATCH_STATUS_JS)
    field(page, "play-prompt").fill(text)
    page.locator("#play-generate").click()
    page.wait_for_function("() => window.__statusSeen.some(s => s.startsWith('Done:'))", timeout=120_000)
    expect(field(page, "play-prompt")).to_have_value("")  # the message moved into the chats
    # while an answer streams, Gradio puts its elapsed-time counter ("0.9s") before the status text
    return [PENDING_TIMER.sub("", s) for s in page.evaluate("() => window.__statusSeen")]


def test_playground_picks_the_run_and_chats_side_by_side(page, studio, tmp_path):
    train_tiny_run(page, studio, tmp_path, "play-chat")

    tab(page, "playground").click()
    # the only finished run is picked, and the "finish a run first" hint is gone
    expect(page.locator("#play-run input")).to_have_value(re.compile(r"^#\d+ play-chat "), timeout=30_000)
    expect(page.locator("#play-run")).not_to_contain_text("Finish a run first")
    page.locator("#play-settings").get_by_text("Generation settings").click()
    expect(page.locator("#play-max-new-tokens input[type=number]").first).to_have_value("256")
    shot(page, "p1-playground-picked")
    set_number(page, "play-max-new-tokens", 40)  # a random tiny model talks to the limit: keep it short

    first = send(page, "What colour is the sky?")
    assert any(s.startswith("Loading run #") for s in first), first
    assert any(re.match(r"Base model answering… \d+ tokens", s) for s in first), first
    assert any(re.match(r"Tuned model answering… \d+ tokens", s) for s in first), first
    done = re.match(r"Done: base (\d+) tokens in [\d.]+ s · tuned (\d+) tokens in [\d.]+ s\.", first[-1])
    assert done and 1 <= int(done[1]) <= 40 and 1 <= int(done[2]) <= 40, first  # the setting is honoured

    # the second question reuses the loaded model; markup a person types shows as typed
    second = send(page, "And the <b>grass</b>?")
    assert not any(s.startswith("Loading run #") for s in second), second
    # a tiny model may answer between two frames: then only the final line says the tuned model answered
    assert any(s.startswith("Tuned model answering…") for s in second) or re.match(
        r"Done: base \d+ tokens in [\d.]+ s · tuned [1-9]\d* tokens", second[-1]), second
    shot(page, "p2-playground-two-turns")

    for column in ("play-base", "play-tuned"):
        messages = page.evaluate(MESSAGES_JS, column)
        assert [role for role, _ in messages] == ["user", "bot", "user", "bot"], (column, messages)
        assert messages[0][1] == "What colour is the sky?"
        assert messages[2][1] == "And the <b>grass</b>?"
        assert page.locator(f"#{column} b").count() == 0
    base_answers = [text for role, text in page.evaluate(MESSAGES_JS, "play-base") if role == "bot"]
    tuned_answers = [text for role, text in page.evaluate(MESSAGES_JS, "play-tuned") if role == "bot"]
    assert all(base_answers) and all(tuned_answers)

    # a new chat empties both columns
    page.locator("#play-clear").click()
    page.wait_for_function(f"() => ({MESSAGES_JS})('play-base').length === 0 "
                           f"&& ({MESSAGES_JS})('play-tuned').length === 0", timeout=30_000)
    shot(page, "p3-playground-new-chat")

    # "new run from this one" says at once what it is doing while the wizard is prepared
    tab(page, "runs").click()
    pick(page, "runs-selected", re.compile("play-chat"))
    page.locator("#runs-reuse").click()
    expect(page.locator("#runs-message")).to_contain_text(re.compile(r"Opening run #\d+'s choices in the wizard"),
                                                         timeout=10_000)
    shot(page, "p4-new-run-from-this-one-waiting")
    expect(field(page, "train-name")).to_have_value(re.compile(r"^play-chat \(from #\d+\)$"), timeout=120_000)

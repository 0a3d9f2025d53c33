"""The train step's learning rate follows the chosen method, as a person meets it in Chromium.

Every method declares its usual learning rate (tuners' Method.learning_rate): the quick preset takes
it, picking another method moves the field to that method's rate unless the person typed their own,
and a rate far outside the method's usual range is called out under the field in plain words.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

import tuners
from tests.browser.conftest import shot
from tests.browser.test_studio import (
    back,
    check_local_model,
    choose_preset,
    pick,
    set_number,
    write_instruction_jsonl,
)
from tests.engine.helpers import save_tiny_model

pytestmark = pytest.mark.browser


def method_option(peft_type: str) -> re.Pattern:
    m = tuners.METHODS[peft_type]
    return re.compile(f"^{re.escape(f'{m.name} ({m.family})')}$")  # "LoRA" alone also matches AdaLoRA


def shown(rate: float) -> str:
    """A rate as the number box holds it (0.003, 0.0002)."""
    return format(rate, "f").rstrip("0")


def lr_box(page):
    return page.locator("#train-lr input[type=number]").first


def to_method_step(page) -> None:
    back(page, "train")
    page.locator("#method-next").wait_for(state="visible", timeout=30_000)


def to_train_step(page, peft_type: str) -> None:
    pick(page, "method-choice", method_option(peft_type))
    page.locator("#method-summary").get_by_text(tuners.METHODS[peft_type].summary[:30]).wait_for(timeout=30_000)
    page.locator("#method-next").click()
    lr_box(page).wait_for(timeout=30_000)


def test_the_learning_rate_follows_the_method_and_warns_when_far_off(page, studio, tmp_path):
    ia3, lora = tuners.METHODS["IA3"], tuners.METHODS["LORA"]
    note = page.locator("#train-lr-note")

    check_local_model(page, studio, save_tiny_model(tmp_path / "tiny-llama"), "LlamaForCausalLM")
    page.locator("#model-next").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(write_instruction_jsonl(tmp_path / "c.jsonl")))
    page.locator("#data-ok").wait_for(timeout=60_000)
    page.locator("#data-next").click()

    # (IA)³ under the quick preset: its own rate, ten times LoRA's, and its range in words
    to_train_step(page, "IA3")
    choose_preset(page, "quick")
    expect(lr_box(page)).to_have_value(shown(ia3.learning_rate), timeout=30_000)
    expect(note).to_contain_text(f"{ia3.name} usually trains at a learning rate of", timeout=30_000)
    expect(note).not_to_contain_text("Warning")
    shot(page, "train-step-ia3-quick")

    # back to LoRA: the field follows the method (nobody typed a rate)
    to_method_step(page)
    to_train_step(page, "LORA")
    expect(lr_box(page)).to_have_value(shown(lora.learning_rate), timeout=30_000)
    expect(note).to_contain_text(f"{lora.name} usually trains at", timeout=30_000)
    assert page.locator("#train-max-steps input[type=number]").first.input_value() == "30"  # still quick

    # an extreme rate, typed: a plain-text warning under the field, naming the method and the factor
    set_number(page, "train-lr", 0.5)
    expect(note).to_contain_text("Warning: a learning rate of 0.5 is about 1000× above what LoRA usually takes",
                                 timeout=30_000)
    shot(page, "train-step-lr-warning")
    assert note.locator("script, img, iframe").count() == 0

    # a typed rate is the person's: another method keeps it, and the warning is measured against that method
    to_method_step(page)
    to_train_step(page, "IA3")
    expect(note).to_contain_text(f"above what {ia3.name} usually takes", timeout=30_000)
    assert lr_box(page).input_value() == "0.5"

    # a preset puts the method's rate back, and the warning goes
    choose_preset(page, "balanced")
    choose_preset(page, "quick")
    expect(lr_box(page)).to_have_value(shown(ia3.learning_rate), timeout=30_000)
    expect(note).not_to_contain_text("Warning", timeout=30_000)

    # far below the range warns too
    set_number(page, "train-lr", "0.00001")
    expect(note).to_contain_text("100× below what", timeout=30_000)
    shot(page, "train-step-lr-too-low")

"""The studio page is wired by name: every component registered once under a stable name, and every
callback that reads several components gets them by name, so adding a field shifts nothing."""

from __future__ import annotations

from collections import Counter

import gradio as gr
import pytest
from gradio.renderable import Renderable

from app.core.settings import Settings
from app.core.spec import RunSpec
from app.services.context import Context
from app.ui import app as studio
from app.ui.elements import Elements
from app.ui.steps import data as data_step
from app.ui.steps import train as train_step


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def callback(demo: gr.Blocks, name: str):
    found = [bf for bf in demo.fns.values() if bf.name == name]
    assert len(found) >= 1, f"no callback named {name}"
    return found[0]


def call(elems: Elements, bf, **by_name) -> dict:
    """Run a callback as Gradio does for a set of inputs (one dict keyed by component), with the
    page's defaults except ``by_name`` (``train__learning_rate`` for ``train.learning_rate``); its
    answer back by name."""
    given = {name.replace("__", "."): value for name, value in by_name.items()}
    data = {c: given.get(elems.name_of(c), getattr(c, "value", None)) for c in bf.inputs}
    assert set(given) <= {elems.name_of(c) for c in bf.inputs}, "a value for a component the callback does not read"
    answer = bf.fn(data)
    if len(bf.outputs) == 1 and not (isinstance(answer, dict) and all(isinstance(k, gr.blocks.Block) for k in answer)):
        return {elems.name_of(bf.outputs[0]): answer}
    return {elems.name_of(block): value for block, value in answer.items()}


def test_a_name_or_a_component_registered_twice_is_refused():
    elems = Elements()
    with gr.Blocks():
        rate, other = gr.Number(0.1), gr.Number(0.2)
    elems.add("train.learning_rate", rate)
    with pytest.raises(ValueError, match="train.learning_rate"):
        elems.add("train.learning_rate", other)
    with pytest.raises(ValueError, match="registered twice"):
        elems.add("train.rate_again", rate)
    with pytest.raises(KeyError, match="train.seed"):
        elems["train.seed"]


def test_a_callback_reads_its_inputs_by_name_and_fails_by_name_on_one_it_was_not_given():
    elems = Elements()
    with gr.Blocks():
        elems.add_all({"method.LORA.r": gr.Number(8), "method.LORA.lora_alpha": gr.Number(16),
                       "method.IA3.target_modules": gr.Textbox("")})
    values = elems.values({elems["method.LORA.lora_alpha"]: 32, elems["method.LORA.r"]: 4})
    assert values["method.LORA.r"] == 4 and values.under("method.LORA.") == {"r": 4, "lora_alpha": 32}
    with pytest.raises(KeyError, match="method.IA3.target_modules.*not among this callback's inputs"):
        values["method.IA3.target_modules"]
    assert elems.updates({"method.LORA.r": 2}) == {elems["method.LORA.r"]: 2}
    assert elems.updates({}) == gr.skip()  # an empty answer changes nothing


def test_every_component_of_the_page_has_one_name_and_one_elem_id(ctx):
    demo, elems = studio.build_page(ctx)
    names = elems.names()
    assert len(names) == len(set(names)) > 100
    assert {"train.learning_rate", "data.ref", "method.choice", "method.LORA.r", "data.role.0", "run.picker",
            "play.prompt", "wizard.step"} <= set(names)
    ids = Counter(b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None))
    assert [i for i, n in ids.items() if n > 1] == []
    # every field a person sets has an elem_id, so the browser tests find it without its label text
    for name in [*data_step.FIELDS, *train_step.FIELDS, "model.custom", "model.precision", "model.batch"]:
        assert name == "data.ref" or elems[name].elem_id, name


def test_no_callback_takes_several_inputs_by_position_and_all_it_touches_is_registered(ctx):
    demo, elems = studio.build_page(ctx)
    positional, unregistered = [], []
    for bf in demo.fns.values():
        if bf.fn is not None and len(bf.inputs) > 1 and not bf.inputs_as_dict:
            positional.append(bf.name)
        # gr.render redraws a container of its own making (the runs tab's comparison chart)
        outputs = [] if isinstance(getattr(bf.fn, "__self__", None), Renderable) else bf.outputs
        for block in [*bf.inputs, *outputs]:
            if block._id not in {elems[n]._id for n in elems.names()}:
                unregistered.append((bf.name, type(block).__name__))
    assert positional == []
    assert unregistered == []


def test_the_spec_preview_reads_each_field_by_name(ctx):
    demo, elems = studio.build_page(ctx)
    answer = call(elems, callback(demo, "review"), data__ref="dataset:1", train__learning_rate=0.0123, train__seed=7,
                  train__max_steps=5, method__LORA__r=4, data__val_fraction=0.2)
    assert answer["train.message"] == ""
    spec = RunSpec.from_yaml(answer["train.yaml"])
    assert spec.training.learning_rate == 0.0123 and spec.training.seed == 7 and spec.training.max_steps == 5
    assert spec.method["peft_type"] == "LORA" and spec.method["r"] == 4
    assert spec.data.dataset == "dataset:1" and spec.data.val_fraction == 0.2
    refused = call(elems, callback(demo, "review"), data__ref=None)
    assert "train.yaml" not in refused and "no dataset yet" in refused["train.message"]


def test_a_field_added_to_a_step_shifts_no_other_callbacks_values(ctx, monkeypatch):
    """A new component first in the data and train steps (so every later component's id moves on):
    the spec preview, the draft and the learning-rate note still get exactly their own values."""
    def with_a_new_field_first(prefix: str, build):
        def patched(*args, **kwargs):
            return {f"{prefix}.zz_new": gr.Number(99, elem_id=f"{prefix}-zz-new"), **build(*args, **kwargs)}
        return patched

    monkeypatch.setattr(data_step, "build", with_a_new_field_first("data", data_step.build))
    monkeypatch.setattr(train_step, "build", with_a_new_field_first("train", train_step.build))
    demo, elems = studio.build_page(ctx)
    assert "train.zz_new" in elems and "data.zz_new" in elems

    answer = call(elems, callback(demo, "review"), data__ref="dataset:1", train__learning_rate=0.0123,
                  train__seed=7, train__name="by-name")
    spec = RunSpec.from_yaml(answer["train.yaml"])
    assert (spec.name, spec.training.learning_rate, spec.training.seed) == ("by-name", 0.0123, 7)

    note = callback(demo, "learning_rate_note")
    data = {c: {"method.choice": "IA3", "train.learning_rate": 0.5}[elems.name_of(c)] for c in note.inputs}
    assert "above what (IA)³ usually takes" in note.fn(data)

    saved = call(elems, callback(demo, "save"), train__learning_rate=0.0123)
    values = saved["draft.stored"]["values"]
    assert values["train.learning_rate"] == 0.0123 and values["train.seed"] == 42 and "train.zz_new" not in values

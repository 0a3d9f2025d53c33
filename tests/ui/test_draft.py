"""What a wizard draft holds, and what of a stale or tampered one goes back into the page."""

from __future__ import annotations

import stat

from app.core.refs import is_registered_ref
from app.services import draft


def test_a_draft_round_trips_plain_values_and_leaves_out_the_rest():
    keys = ["model.custom", "model.trust", "data.val_fraction", "method.LORA.r", "data.role.0", "file", "tags"]
    values = ["/models/x", True, 0.2, 16, None, object(), ["a", "b"]]
    stored = draft.pack(keys, values)
    assert "file" not in stored["values"]
    assert draft.unpack(stored, keys) == {"model.custom": "/models/x", "model.trust": True,
                                          "data.val_fraction": 0.2, "method.LORA.r": 16, "data.role.0": None,
                                          "tags": ["a", "b"]}


def test_only_known_fields_and_values_a_field_still_accepts_come_back():
    stored = draft.pack(["method.choice", "train.name", "gone.field"], ["NOT_A_METHOD", "x", 1])
    accept = {"method.choice": draft.one_of(["LORA", "IA3"])}
    assert draft.unpack(stored, ["method.choice", "train.name"], accept) == {"train.name": "x"}


def test_a_dataset_reference_comes_back_but_a_path_never_does():
    for ref, ok in [("dataset:12", True), ("/etc/passwd", False), ("dataset:../../x", False), (3, False)]:
        stored = {"version": draft.DRAFT_VERSION, "values": {"data.ref": ref}}
        got = draft.unpack(stored, ["data.ref"], {"data.ref": is_registered_ref})
        assert got == ({"data.ref": ref} if ok else {}), ref


def test_anything_that_is_not_a_draft_of_this_version_restores_nothing():
    for junk in [None, {}, "text", [1, 2], {"version": 99, "values": {"a": 1}}, {"version": 1, "values": [1]},
                 {"version": 1, "values": {"a": {"nested": 1}}}]:
        assert draft.unpack(junk, ["a"]) == {}


def test_the_browser_secret_is_made_once_private_and_then_reused(tmp_path):
    first = draft.browser_secret(tmp_path / "home")
    assert len(first) >= 24 and draft.browser_secret(tmp_path / "home") == first
    mode = (tmp_path / "home" / "draft-secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_an_empty_or_foreign_draft_has_no_values_waiting():
    assert draft.has_values(draft.pack(["train.name"], ["x"]))
    assert not any(draft.has_values(d) for d in [None, draft.pack([], []), {"version": 99, "values": {"a": 1}}])


def test_a_draft_from_a_run_rebuilds_the_same_spec_through_the_wizard(tmp_path):
    """The wizard reads a draft field by field; fed back through the wizard's own mapping, a run's
    draft gives back that run's spec (only the name says where it came from)."""
    from app.services.data_preview import roles_for
    from app.services.wizard import WizardChoices, build_spec

    spec = build_spec(WizardChoices(
        name="colours", model="SmolLM2-135M-Instruct", dataset="dataset:7", peft_type="LORA",
        method_values={"r": "4", "target_modules": "q_proj, v_proj", "lora_alpha": "8", "use_dora": True},
        shape="instruction", mapping={"instruction": "question", "input": "", "output": "answer"},
        precision="fp32", quantization="nf4-dq", val_fraction=0.2, dedupe=False, max_length=256, epochs=3,
        learning_rate=1e-4, batch_size=2, max_steps=40, grad_accum=2, warmup_steps=5, scheduler="cosine",
        weight_decay=0.01, eval_every=10, checkpoint_every=20, seed=7,
    ))
    values = draft.unpack(draft.from_spec(spec, 12), [*draft.from_spec(spec, 12)["values"]])
    assert values["wizard.step"] == 3 and values["train.name"] == "colours (from #12)"
    assert values["model.bundled"] == "SmolLM2-135M-Instruct" and values["model.custom"] == ""
    assert values["method.LORA.target_modules"] == "q_proj, v_proj"
    shape = values["data.shape"]
    rebuilt = build_spec(WizardChoices(
        name="colours", model=values["model.custom"] or values["model.bundled"], dataset=values["data.ref"],
        peft_type=values["method.choice"],
        method_values={k.split(".", 2)[2]: v for k, v in values.items() if k.startswith("method.LORA.")},
        shape=shape, mapping={r: values[f"data.role.{i}"] for i, r in enumerate(roles_for(shape))},
        trust_remote_code=values["model.trust"], precision=values["model.precision"],
        quantization=values["model.quantization"], val_fraction=values["data.val_fraction"],
        dedupe=values["data.dedupe"], max_length=values["data.max_length"],
        **{name: values[f"train.{name}"] for name in draft.TRAIN_FIELDS[1:]},
    ))
    assert rebuilt.to_dict() == spec.to_dict()


def test_a_run_whose_data_was_a_file_path_leaves_the_data_step_empty():
    from app.core.spec import DataSpec, ModelSpec, RunSpec

    spec = RunSpec(name="cli", model=ModelSpec(name="SmolLM2-135M-Instruct"),
                   data=DataSpec(dataset="/data/colours.jsonl"), method={"peft_type": "LORA"})
    stored = draft.from_spec(spec, 3)
    assert draft.unpack(stored, ["data.ref"], {"data.ref": is_registered_ref}) == {}


def test_restoring_into_a_used_page_sets_every_field_and_forgets_an_old_dataset():
    import gradio as gr

    from app.ui import draft as draft_ui
    from app.ui.elements import Elements

    elems = Elements()
    with gr.Blocks():
        elems.add_all({"data.ref": gr.State(None), "train.name": gr.Textbox(""), "train.seed": gr.Number(42)})
    fields = draft_ui.fields(elems, restored=["data.ref", "train.name", "train.seed"], derived=[])
    stored = draft.pack(["train.name", "train.seed"], ["again", 42])
    assert draft_ui.restore(fields, stored, fresh_page=True) == {"train.name": "again"}  # defaults left alone
    into_used_page = draft_ui.restore(fields, stored, fresh_page=False)
    assert into_used_page == {"data.ref": None, "train.name": "again", "train.seed": 42}


def test_a_page_showing_only_its_defaults_stores_no_draft_until_something_is_typed():
    import gradio as gr

    from app.ui import draft as draft_ui
    from app.ui.elements import Elements

    elems = Elements()
    with gr.Blocks():
        elems.add_all({"train.name": gr.Textbox(""), "model.checked": gr.State(False)})
    fields = draft_ui.fields(elems, restored=["train.name"], derived=["model.checked"])
    assert draft_ui.save(fields, None, {"train.name": None, "model.checked": False}) == gr.skip()
    saved = draft_ui.save(fields, None, {"train.name": "mine", "model.checked": False})
    assert draft.unpack(saved, fields.names) == {"train.name": "mine", "model.checked": False}

"""What a wizard draft holds, and what of a stale or tampered one goes back into the page."""

from __future__ import annotations

import stat

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
        got = draft.unpack(stored, ["data.ref"], {"data.ref": draft.dataset_ref})
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

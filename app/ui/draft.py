"""The wizard's fields by name, saved to the browser as they change and put back when the page loads.

What is restored directly: the plain fields and the wizard step. The model check and the data
preview are redone on the server from the restored values (see ``app.ui.app``), because what they
show (column choices, the model's shape) is derived, not typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.core.refs import is_registered_ref
from app.services import draft as draft_service

STORAGE_KEY = "tunestudio-wizard-draft"
# In the page only: a server round trip could be overtaken by the reload and leave the draft behind.
START_OVER_JS = f"() => {{ window.localStorage.removeItem('{STORAGE_KEY}'); window.location.reload(); }}"


@dataclass
class DraftFields:
    keys: list[str]
    components: list[gr.components.Component]
    restored: list[str]  # keys put back as values; the others are rebuilt by the server
    accept: dict[str, Any]

    def restore_outputs(self) -> list[gr.components.Component]:
        return [c for k, c in zip(self.keys, self.components) if k in self.restored]


def browser_state(home: Path) -> gr.BrowserState:
    return gr.BrowserState(None, storage_key=STORAGE_KEY, secret=draft_service.browser_secret(home))


def fields(ms, ds, me, ts, at_step: gr.State) -> DraftFields:
    """Every wizard value worth keeping, under a stable name."""
    named: list[tuple[str, Any]] = [
        ("model.bundled", ms.bundled), ("model.custom", ms.custom), ("model.trust", ms.trust),
        ("model.precision", ms.precision), ("model.quantization", ms.quantization),
        ("model.seq_len", ms.seq_len), ("model.batch", ms.batch),
        ("data.bundled", ds.bundled), ("data.val_fraction", ds.val_fraction), ("data.dedupe", ds.dedupe),
        ("data.max_length", ds.max_length),
        ("data.ref", ds.ref), ("method.choice", me.choice),
        *((f"method.{pt}.{name}", comp) for (pt, name), comp in zip(me.keys, me.inputs)),
        ("train.preset", ts.preset),
        *((f"train.{name}", comp) for name, comp in zip(draft_service.TRAIN_FIELDS, ts.values(), strict=True)),
        ("wizard.step", at_step),
    ]
    derived = [("model.info", ms.info), ("data.shape", ds.shape), *((f"data.role.{i}", r) for i, r in enumerate(ds.roles))]
    keys = [k for k, _ in named] + [k for k, _ in derived]
    components = [c for _, c in named] + [c for _, c in derived]
    accept: dict[str, Any] = {"data.ref": is_registered_ref,
                              "wizard.step": draft_service.one_of(range(4))}
    for key, comp in named:
        if isinstance(comp, gr.Dropdown | gr.Radio) and comp.choices:
            accept[key] = draft_service.one_of(value for _, value in comp.choices)
    return DraftFields(keys, components, [k for k, _ in named], accept)


EMPTY = draft_service.pack([], [])  # stored rather than None, which the page would not write


def save(f: DraftFields, current: Any, *values: Any) -> Any:
    """The draft to keep: none while the page still shows only its defaults and nothing is stored, so
    change events fired while a fresh page settles (after Start over, too) do not store an empty one."""
    defaults = [getattr(c, "value", None) for c in f.components]
    untouched = all(v == d or (v in (None, "") and d in (None, "")) for v, d in zip(values, defaults))
    if current is None and untouched:
        return gr.skip()
    return draft_service.pack(f.keys, values)


def restore(f: DraftFields, draft: Any, fresh_page: bool = True) -> list[Any]:
    """Updates for ``f.restore_outputs()``: the page shows the draft, and the page's default where the
    draft has nothing (a run whose data was a file path leaves the data step empty). On a freshly
    loaded page the defaults are already there, so those fields are left alone (an update would fire
    their change listeners for nothing)."""
    values = draft_service.unpack(draft, f.restored, f.accept)
    defaults = {k: getattr(c, "value", None) for k, c in zip(f.keys, f.components)}
    if fresh_page:
        return [values[k] if k in values and values[k] != defaults[k] else gr.skip() for k in f.restored]
    return [values.get(k, defaults[k]) for k in f.restored]


def stored(f: DraftFields, draft: Any) -> dict[str, Any]:
    """Every value of ``draft`` the fields accept, by name."""
    return draft_service.unpack(draft, f.keys, f.accept)

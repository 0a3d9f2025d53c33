"""The wizard's fields by name (their ``Elements`` names are the draft's keys), saved to the browser
as they change and put back when the page loads.

What is restored directly: the plain fields and the wizard step. The model check and the data
preview are redone on the server from the restored values (see ``app.ui.app``), because what they
show (column choices, the model's shape) is derived, not typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.core.refs import is_registered_ref
from app.services import draft as draft_service
from app.ui.elements import Elements

STORAGE_KEY = "tunestudio-wizard-draft"
# In the page only: a server round trip could be overtaken by the reload and leave the draft behind.
START_OVER_JS = f"() => {{ window.localStorage.removeItem('{STORAGE_KEY}'); window.location.reload(); }}"


# The page's draft as the browser keeps it, and as it was when the page loaded (or a run was reused).
STORED = "draft.stored"
LOADED = "draft.loaded"


@dataclass
class DraftFields:
    """The wizard's draft fields by name: ``restored`` are put back as values; ``derived`` are saved but
    rebuilt by the server from the restored ones (the model check, the data preview)."""

    restored: list[str]
    derived: list[str]
    defaults: dict[str, Any]  # what the page shows before anything is typed
    accept: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [*self.restored, *self.derived]


def browser_state(home: Path) -> gr.BrowserState:
    return gr.BrowserState(None, storage_key=STORAGE_KEY, secret=draft_service.browser_secret(home))


def fields(elems: Elements, restored: list[str], derived: list[str]) -> DraftFields:
    """The draft over the named components; a choice field accepts back only what it still offers."""
    accept: dict[str, Any] = {"data.ref": is_registered_ref, "wizard.step": draft_service.one_of(range(4))}
    for name in restored:
        comp = elems[name]
        if isinstance(comp, gr.Dropdown | gr.Radio) and comp.choices:
            accept[name] = draft_service.one_of(value for _, value in comp.choices)
    defaults = {name: getattr(elems[name], "value", None) for name in [*restored, *derived]}
    return DraftFields(list(restored), list(derived), defaults, accept)


EMPTY = draft_service.pack([], [])  # stored rather than None, which the page would not write


def save(f: DraftFields, current: Any, values: Mapping[str, Any]) -> Any:
    """The draft to keep, from the fields' values by name: none while the page still shows only its
    defaults and nothing is stored, so change events fired while a fresh page settles (after Start
    over, too) do not store an empty one."""
    untouched = all(values[k] == d or (values[k] in (None, "") and d in (None, "")) for k, d in f.defaults.items())
    if current is None and untouched:
        return gr.skip()
    return draft_service.pack(f.names, [values[k] for k in f.names])


def restore(f: DraftFields, draft: Any, fresh_page: bool = True) -> dict[str, Any]:
    """Values for ``f.restored`` by name: the page shows the draft, and the page's default where the
    draft has nothing (a run whose data was a file path leaves the data step empty). On a freshly
    loaded page the defaults are already there, so those fields are left out (an update would fire
    their change listeners for nothing)."""
    values = draft_service.unpack(draft, f.restored, f.accept)
    if fresh_page:
        return {k: values[k] for k in f.restored if k in values and values[k] != f.defaults[k]}
    return {k: values.get(k, f.defaults[k]) for k in f.restored}


def stored(f: DraftFields, draft: Any) -> dict[str, Any]:
    """Every value of ``draft`` the fields accept, by name."""
    return draft_service.unpack(draft, f.names, f.accept)

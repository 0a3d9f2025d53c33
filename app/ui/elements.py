"""Every component of one studio page under a stable name, so callbacks read and write by name.

In the spirit of LlamaBoard's ``Manager``: each step/tab module builds its components and returns
them by name (``"train.learning_rate"``, ``"data.role.0"``, ``"method.LORA.r"``); ``app.ui.app``
registers them in one ``Elements`` per built page (no global state) and wires every event that
reads several components with a component *set*, for which Gradio passes the callback one dict
keyed by component. ``Elements.values`` turns that dict into names and ``Elements.updates`` turns a
callback's answer, keyed by name, back into components. So adding a field never shifts another
callback's arguments or outputs, and a callback that reads a name it was not given fails by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import gradio as gr
from gradio.blocks import Block


class Values(Mapping[str, Any]):
    """One callback's input values by component name (read-only)."""

    def __init__(self, by_name: dict[str, Any]) -> None:
        self._by_name = by_name

    def __getitem__(self, name: str) -> Any:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{name!r} is not among this callback's inputs") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def under(self, prefix: str) -> dict[str, Any]:
        """The values whose names start with ``prefix``, by the rest of their name
        (``under("method.LORA.")`` → ``{"r": 8, ...}``)."""
        return {name[len(prefix):]: v for name, v in self._by_name.items() if name.startswith(prefix)}


class Elements:
    """The page's components by name; one instance per built page."""

    def __init__(self) -> None:
        self._by_name: dict[str, Block] = {}
        self._name_of: dict[int, str] = {}  # Block._id -> name

    def add(self, name: str, block: Block) -> Block:
        if name in self._by_name:
            raise ValueError(f"two components are registered as {name!r}")
        if block._id in self._name_of:
            raise ValueError(f"one component is registered twice: {self._name_of[block._id]!r} and {name!r}")
        self._by_name[name] = block
        self._name_of[block._id] = name
        return block

    def add_all(self, named: Mapping[str, Block]) -> None:
        for name, block in named.items():
            self.add(name, block)

    def __getitem__(self, name: str) -> Block:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no component is registered as {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self, prefix: str = "") -> list[str]:
        """The registered names that start with ``prefix``, in the order they were registered."""
        return [name for name in self._by_name if name.startswith(prefix)]

    def name_of(self, block: Block) -> str:
        try:
            return self._name_of[block._id]
        except KeyError:
            raise KeyError(f"{block!r} is not registered") from None

    def of(self, *names: str | Iterable[str]) -> set[Block]:
        """The components named, as a set: Gradio then passes their values as one dict keyed by
        component (for ``Elements.values``). Each argument is a name or an iterable of names."""
        picked: set[Block] = set()
        for item in names:
            for name in [item] if isinstance(item, str) else item:
                picked.add(self[name])
        return picked

    def values(self, data: Mapping[Block, Any]) -> Values:
        """Gradio's input dict (keyed by component) by name."""
        return Values({self.name_of(block): value for block, value in data.items()})

    def updates(self, by_name: Mapping[str, Any]) -> dict[Block, Any]:
        """A callback's answer keyed by name, as Gradio takes it: keyed by component. Outputs left
        out are not changed (an empty answer changes nothing)."""
        if not by_name:
            return gr.skip()
        return {self[name]: value for name, value in by_name.items()}

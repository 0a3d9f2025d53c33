"""Dataset references, as a spec or the wizard writes them.

``dataset:N`` (or the bare number) is a registered dataset, ``bundled:<name>`` a dataset shipped
with the studio, ``org/name[:split]`` may be a dataset in the local 🤗 datasets cache, anything else
a file path. This module is the only place that spells them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REGISTERED_PREFIX = "dataset:"
BUNDLED_PREFIX = "bundled:"


def registered_ref(dataset_id: int) -> str:
    return f"{REGISTERED_PREFIX}{dataset_id}"


def dataset_id_of(ref: str | int | None) -> int | None:
    """The registered dataset's id for ``3`` or ``"dataset:3"``; None for a file or bundled name."""
    if ref is None or isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return ref
    text = str(ref).strip()
    text = text.removeprefix(REGISTERED_PREFIX)
    return int(text) if text.isdigit() else None


def is_registered_ref(value: object) -> bool:
    """Strictly ``dataset:N``: what a stored draft may hold (never a path)."""
    return isinstance(value, str) and re.fullmatch(rf"{REGISTERED_PREFIX}\d+", value) is not None


def bundled_name_of(ref: str | int | None) -> str | None:
    """The bundled dataset's name for ``"bundled:chatterbot"``; None otherwise."""
    if isinstance(ref, str) and ref.strip().startswith(BUNDLED_PREFIX):
        return ref.strip()[len(BUNDLED_PREFIX):]
    return None


_HUB_ID = re.compile(
    r"(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)"
    r"(?::(?P<first>[A-Za-z0-9_.-]+))?(?::(?P<second>[A-Za-z0-9_.-]+))?"
)


@dataclass(frozen=True)
class HubDatasetRef:
    """A 🤗 dataset id as a spec writes it: ``org/name``, ``org/name:split`` or ``org/name:config:split``."""

    repo_id: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return ":".join(p for p in (self.repo_id, self.config, self.split) if p)


def hub_dataset_of(ref: str | int | None) -> HubDatasetRef | None:
    """The 🤗 dataset id ``ref`` spells, or None. Spelling only: ``reviews/train.csv`` spells one too,
    so a caller that can see files asks :func:`app.data.sources.hub_reference`, where a file wins."""
    if not isinstance(ref, str):
        return None
    found = _HUB_ID.fullmatch(ref.strip())
    if found is None:
        return None
    if found["second"] is not None:
        return HubDatasetRef(found["repo"], found["first"], found["second"])
    return HubDatasetRef(found["repo"], None, found["first"])

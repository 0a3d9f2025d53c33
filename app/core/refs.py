"""Dataset references, as a spec or the wizard writes them.

``dataset:N`` (or the bare number) is a registered dataset, ``bundled:<name>`` a dataset shipped
with the studio, anything else a file path. This module is the only place that spells them.
"""

from __future__ import annotations

import re

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

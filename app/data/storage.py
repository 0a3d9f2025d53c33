"""Keeping an upload: checked first, then copied in one atomic step, so a bad or cut-off upload
never leaves a file behind."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from app.data.limits import Limits
from app.data.readers import Table, read_table

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """The last path component with anything but letters, digits, '.', '_' and '-' replaced."""
    base = re.split(r"[\\/]", name)[-1].strip()
    cleaned = _UNSAFE.sub("_", base).lstrip(".") or "upload"
    return cleaned[:120]


def store_upload(
    source: str | Path, folder: str | Path, *, name: str | None = None, encoding: str | None = None,
    limits: Limits | None = None,
) -> tuple[Path, Table]:
    """Read ``source`` fully (raising DataError if it is unusable), then copy it into ``folder``.

    The copy goes to a temporary file in ``folder`` and is renamed into place, so the folder holds
    either the whole file or nothing. Returns the stored path and the table read from it.
    """
    source = Path(source)
    display = name or source.name
    table = read_table(source, encoding=encoding, limits=limits, name=display)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_name(display)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target, table

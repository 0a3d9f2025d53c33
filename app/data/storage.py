"""Keeping an upload: one content-addressed store under the studio's artifacts folder.

A file is copied in one atomic step (a temporary file in the store, then a rename), with a bound on
the bytes copied, under a name that cannot leave the store; so a cut-off or oversized copy never
leaves a file behind, and the same bytes stored twice under one name land on the same path.
Checking the data is not this module's job: :func:`app.data.check.check_data_file` comes first.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from app.data.errors import DataError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
# Stored files sit in <store>/<first 16 hex digits of their sha256>/<safe name>.
DIGEST_FOLDER_CHARS = 16


def safe_name(name: str) -> str:
    """The last path component with anything but letters, digits, '.', '_' and '-' replaced."""
    base = re.split(r"[\\/]", name)[-1].strip()
    cleaned = _UNSAFE.sub("_", base).lstrip(".") or "upload"
    return cleaned[:120]


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def store_upload(source: str | Path, store: str | Path, *, sha256: str, name: str, max_bytes: int) -> Path:
    """Copy ``source`` to ``store/<sha256[:16]>/<safe_name(name)>`` and return that path.

    The copy stops with DataError ``too_large`` past ``max_bytes`` (a file can grow after it was
    checked) and leaves nothing; a file already stored there is kept as it is.
    """
    if not _DIGEST.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    store = Path(store).resolve()
    folder = store / sha256[:DIGEST_FOLDER_CHARS]
    target = folder / safe_name(name)
    if not target.resolve().is_relative_to(store):
        raise ValueError(f"{name!r} would be stored outside {store}")
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            copied = 0
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                copied += len(chunk)
                if copied > max_bytes:
                    raise DataError("too_large", f"the file is over the limit of {max_bytes:,} bytes",
                                    file=name, hint="Upload a smaller file or raise the upload limit")
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()
        raise
    return target

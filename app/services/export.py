"""Downloads: a finished run's adapter folder as one zip (written atomically under exports/).

The run's adapter is its best eval's when the engine kept one (``RunView.adapter_path``); the last
step's stays downloadable with ``last=True`` (the run view's second button, ``tunestudio export N --last``).
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path

from app.core.errors import UserError
from app.services.context import Context
from app.services.runs import get_run


class NoAdapter(UserError, LookupError):
    """The run has no saved adapter (not finished, failed, or cancelled)."""


def export_adapter_zip(ctx: Context, run_id: int, out: str | Path | None = None, last: bool = False) -> Path:
    """Zip the run's adapter folder (weights, adapter_config.json, README.md, training_config.yaml): its best
    eval's when kept, else the last step's; ``last``: the last step's in any case."""
    run = get_run(ctx, run_id)
    path = run.last_adapter_path if last and run.adapter_path else run.adapter_path
    if path is None or not Path(path).is_dir():
        raise NoAdapter(f"run {run_id} ({run.status}) has no adapter to export")
    if out is None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.name).strip("-")[:60] or "run"
        out = ctx.settings.exports_dir / f"run-{run_id}-{slug}{'-last' if last else ''}.zip"
        if out.is_file():
            return out  # a finished run's adapters never change; their zips go when the run is deleted
    return zip_folder(Path(path), Path(out))


def zip_folder(folder: Path, out: Path) -> Path:
    """Zip every file under ``folder`` into ``out``; the zip appears whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(folder).as_posix())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out

"""A run's checkpoint folders: where they live, which are complete, which one to resume from, which to keep.

A checkpoint is ``<run folder>/checkpoints/step-<N>/``: an adapter folder plus :data:`STATE_FILE`, which
the engine writes last and atomically, so a folder is complete exactly when that file exists. A folder
without it was being written when its worker died; it is never resumed from and is removed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

# Inside a checkpoint folder, beside the adapter files: everything else needed to continue the run.
STATE_FILE = "training_state.pt"
CHECKPOINTS = "checkpoints"
_STEP_FOLDER = re.compile(r"step-(\d+)")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step-{step}"


def is_complete(folder: Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def _by_step(folder: Path) -> list[tuple[int, Path]]:
    """The ``step-N`` folders under ``folder``, oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := _STEP_FOLDER.fullmatch(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> tuple[int, Path] | None:
    """(step, folder) of the run's newest complete checkpoint after step 0; incomplete folders are removed
    on the way (a worker died while writing them). None when there is nothing to resume from."""
    latest = None
    for step, path in _by_step(Path(out_dir) / CHECKPOINTS):
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
        elif step > 0:
            latest = (step, path)
    return latest


def prune_checkpoints(folder: Path, keep: int, protect: Iterable[Path] = ()) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints under ``folder`` (a run's ``checkpoints/``) and any in
    ``protect`` (e.g. the best eval's); remove the other complete ones and every incomplete one. Returns
    what was removed. The one place retention is decided: a new rule adds to ``protect`` or to this."""
    kept = {Path(p).resolve() for p in protect}
    complete = [path for _, path in _by_step(Path(folder)) if is_complete(path)]
    kept.update(path.resolve() for path in complete[-keep:] if keep > 0)
    removed = []
    for _, path in _by_step(Path(folder)):
        if path.resolve() not in kept:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed

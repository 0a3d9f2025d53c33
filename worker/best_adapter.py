"""A run's best eval adapter folder: where it lives, written whole, one at a time.

Whenever an eval is the best so far (``training.best_metric``), the engine writes the adapter as it is
then to ``<run folder>/best/step-<N>/`` (the same files as the final ``adapter/``) and removes the one
it replaces. Each step has its own folder, so a reader holding the path of a kept best adapter never
sees it half rewritten: a new one is written under a temporary name and renamed into place whole.
When the best eval is the last step's, the final ``adapter/`` is that adapter and no copy is kept.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

BEST = "best"


def best_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / BEST / f"step-{step}"


def replace_best(out_dir: Path, step: int, write: Callable[[Path], object]) -> Path:
    """``write(folder)`` the adapter into a temporary folder, rename it to :func:`best_dir` and remove every
    other folder under ``best/``; returns the new folder. A folder of the same step (a resumed run
    reaching that eval again) is replaced."""
    target = best_dir(out_dir, step)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    write(partial)
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
    for other in target.parent.iterdir():
        if other != target:
            shutil.rmtree(other, ignore_errors=True)
    return target


def clear_best(out_dir: Path) -> None:
    """Remove ``best/`` (the last step's adapter is the best one, or no kept copy is right any more)."""
    shutil.rmtree(Path(out_dir) / BEST, ignore_errors=True)


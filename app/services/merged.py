"""Download a merged model: the base with the run's adapter folded into its weights (where the method
allows it), saved as safetensors with its tokenizer, zipped atomically under exports/.

Methods that cannot be merged (soft prompts, bottleneck adapters, ...) are refused with a message
naming the method; the adapter zip is the download for those.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from app.services import runs
from app.services.context import Context
from app.services.export import zip_folder


class NotMergeable(RuntimeError):
    pass


def merged_zip_path(ctx: Context, run_id: int) -> Path:
    return ctx.settings.exports_dir / f"run-{int(run_id)}-merged.zip"


def export_merged_zip(ctx: Context, run_id: int) -> Path:
    """The merged model's zip (made once, then reused)."""
    from app.services.playground import load_run

    out = merged_zip_path(ctx, run_id)
    if out.is_file():
        return out
    loaded = load_run(ctx, run_id)
    method = runs.get_run(ctx, run_id).method
    try:
        merged = loaded.tuned.merge_and_unload()
    except NotImplementedError as exc:
        raise NotMergeable(f"{method} adapters cannot be merged into the base weights ({exc}); "
                           "download the adapter instead") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".merged-{run_id}-", dir=out.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)
        return zip_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

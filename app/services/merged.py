"""Download a merged model: the base with the run's adapter folded into its weights (where the method
allows it), saved as safetensors with its tokenizer, zipped atomically under exports/.

Methods that cannot be merged (soft prompts, bottleneck adapters, ...) are refused with a message
naming the method; the adapter zip is the download for those.

Building takes a while for a real model (load, merge, write hundreds of MB, pack), so each stage is
reported to an optional ``progress`` callback the page shows. Weight files go into the zip stored,
not deflated: float weights barely compress (a few per cent) and deflating 540 MB took most of the
wait on a busy CPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from app.core.errors import UserError
from app.services import runs
from app.services.context import Context

# Stages reported while building, with the share of the wait done when each starts.
STAGES = {"loading": 0.0, "merging": 0.3, "writing": 0.4, "zipping": 0.8}
Progress = Callable[[str, int], None]  # (stage, megabytes it handles; 0 when unknown)

_STORED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class NotMergeable(UserError, RuntimeError):
    pass


def merged_zip_path(ctx: Context, run_id: int) -> Path:
    return ctx.settings.exports_dir / f"run-{int(run_id)}-merged.zip"


def _mb(n_bytes: int) -> int:
    return max(1, round(n_bytes / 1e6))


def export_merged_zip(ctx: Context, run_id: int, progress: Progress | None = None) -> Path:
    """The merged model's zip (made once, then reused)."""
    from app.services.playground import load_run

    report = progress or (lambda stage, mb: None)
    out = merged_zip_path(ctx, run_id)
    if out.is_file():
        return out
    report("loading", 0)
    loaded = load_run(ctx, run_id)
    method = runs.get_run(ctx, run_id).method
    report("merging", 0)
    try:
        merged = loaded.tuned.merge_and_unload()
    except NotImplementedError as exc:
        raise NotMergeable(f"{method} adapters cannot be merged into the base weights ({exc}); "
                           "download the adapter instead") from None
    size = sum(p.numel() * p.element_size() for p in merged.state_dict().values())
    report("writing", _mb(size))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".merged-{run_id}-", dir=out.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)
        del merged, loaded
        written = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
        report("zipping", _mb(written))
        return zip_model_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def zip_model_folder(folder: Path, out: Path) -> Path:
    """Zip ``folder`` into ``out`` (whole or not at all): weights stored, text files deflated."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    stored = file.name.endswith(_STORED_SUFFIXES)
                    zf.write(file, file.relative_to(folder).as_posix(),
                             compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out

"""Gradio's temporary copy of an upload is removed once the studio has stored or refused the file.

Gradio writes each upload to ``$GRADIO_TEMP_DIR/<sha>/<name>`` and never removes it while it
serves (its ``delete_cache`` only sweeps files older than a day). The data step hands the file to
``add_dataset`` at once, which keeps its own content-addressed copy (or refuses the file, keeping
nothing), so the temporary copy has no further use: the step remembers the dataset reference, or
the refusal, and never reads the upload again.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from gradio.utils import get_upload_folder


def discard(path: str | Path | None) -> bool:
    """Remove the upload at ``path`` and its per-upload folder once empty; True when it was removed.

    Only a file inside Gradio's upload folder is touched: a path from anywhere else (a demo file,
    a file a test passes in) is left alone.
    """
    if not path:
        return False
    folder = Path(get_upload_folder()).resolve()
    file = Path(path).resolve()
    if folder not in file.parents or not file.is_file():
        return False
    file.unlink(missing_ok=True)
    if file.parent != folder:
        with contextlib.suppress(OSError):  # only when empty: the same bytes may be on their way in again
            file.parent.rmdir()
    return True

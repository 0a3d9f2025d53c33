"""Prepared data kept by fingerprint, so a second run on the same data and settings tokenizes nothing.

An entry is a folder ``<cache>/prepared/<key>/`` holding the tokenized Arrow files, the split
indices and ``prepared.json`` (stats, class names, which files hold which split). ``key`` is the
fingerprint of everything the examples depend on (:func:`fingerprint`): the data files' content
(sha256), the tokenizer (its whole serialized vocabulary, merges, normalizer and special tokens),
the chat template, every preparation option, the reader limits and :data:`PREPARE_VERSION`.

Entries are built in a temporary folder beside them and renamed into place in one step, so a crash
leaves no half entry (only a ``.building-*`` folder, removed the next time the cache is opened
once it is a day old), and two workers building the same entry both end up reading the one that
was renamed first. A file's sha256 is remembered by path, size, modification time and inode
(``digests/``): a second run on an unchanged file does not read its bytes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.data.examples import ExampleSet
from app.data.prepare import PREPARE_VERSION, Prepared, open_split
from app.data.storage import file_sha256

MANIFEST = "prepared.json"
_STALE_BUILD_SECONDS = 24 * 3600
_TOKENIZER_SETTINGS = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token",
                       "padding_side", "truncation_side", "add_bos_token", "add_eos_token", "model_max_length",
                       "clean_up_tokenization_spaces", "all_special_ids")


def tokenizer_identity(tokenizer: Any) -> str:
    """A digest of what decides how the tokenizer turns text into ids: a fast tokenizer's whole
    serialized state (vocabulary, merges, normalizer, pre-tokenizer, post-processor, added tokens),
    a slow one's vocabulary, and the special tokens and sides it pads and truncates on."""
    h = hashlib.sha256(f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    settings = {name: getattr(tokenizer, name, None) for name in _TOKENIZER_SETTINGS}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def fingerprint(inputs: dict[str, Any]) -> str:
    """The cache key of a preparation: a digest of its JSON-ready ``inputs`` and the code version."""
    text = json.dumps({"prepare_version": PREPARE_VERSION, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class PreparedCache:
    """Entries under ``folder`` (the studio's ``Settings.data_cache_dir``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.entries = self.folder / "prepared"
        self.digests = self.folder / "digests"
        self._remove_stale_builds()

    # --- data file digests ---------------------------------------------------------------------

    def content_digest(self, path: Path) -> str:
        """The file's sha256, remembered by (path, size, mtime, inode) so an unchanged file is read once."""
        path = Path(path).resolve()
        st = path.stat()
        stat_key = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}".encode()).hexdigest()
        memo = self.digests / stat_key
        if memo.is_file():
            return memo.read_text().strip()
        digest = file_sha256(path)
        _write_atomically(memo, digest)
        return digest

    # --- entries -------------------------------------------------------------------------------

    def load(self, key: str) -> tuple[Prepared, dict] | None:
        """The entry ``key`` (prepared splits and its manifest), or None when there is none usable."""
        folder = self.entries / key
        if not (folder / MANIFEST).is_file():
            return None
        started = time.perf_counter()
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            layout = manifest["layout"]
            train, evals = open_split(folder, layout["train"]), open_split(folder, layout["eval"])
        except (OSError, ValueError, KeyError):  # damaged by hand or by a full disk: build it again
            shutil.rmtree(folder, ignore_errors=True)
            return None
        prepared = Prepared(ExampleSet(train), ExampleSet(evals), manifest["label_names"], manifest["stats"], layout,
                            {"cache_load": time.perf_counter() - started})
        return prepared, manifest

    def build(self, key: str, make: Callable[[Path], dict]) -> tuple[Prepared, dict]:
        """Build entry ``key`` with ``make(folder)`` (which writes the files and returns the manifest)
        in a temporary folder, rename it into place, and load it."""
        self.entries.mkdir(parents=True, exist_ok=True)
        with self._building(key) as folder:
            manifest = make(folder)
            manifest = {"key": key, "created": datetime.now(UTC).isoformat(timespec="seconds"), **manifest}
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        loaded = self.load(key)
        if loaded is None:
            raise OSError(f"the prepared data {self.entries / key} cannot be read back")
        return loaded

    @contextmanager
    def _building(self, key: str) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix=f".building-{key}-", dir=self.entries))
        try:
            yield folder
            try:
                os.rename(folder, self.entries / key)
            except OSError:
                if not (self.entries / key / MANIFEST).is_file():
                    raise
                # another worker renamed the same entry into place first; theirs is the one read
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _remove_stale_builds(self) -> None:
        if not self.entries.is_dir():
            return
        cutoff = time.time() - _STALE_BUILD_SECONDS
        for folder in self.entries.glob(".building-*"):
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

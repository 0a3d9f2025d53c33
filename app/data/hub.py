"""Datasets in the local 🤗 datasets cache as a data source, offline: ``org/name[:config][:split]``.

What ``datasets.load_dataset("org/name")`` once downloaded and prepared sits in the cache
(``$HF_DATASETS_CACHE``, by default ``~/.cache/huggingface/datasets``) as
``org___name/<config>/<version>/<hash>/name-<split>.arrow``. It is read here with ``datasets``' own
cache reader — the builder ``load_dataset`` falls back to when offline — so nothing here ever asks
the network: a dataset that is not cached is a ``no_source`` DataError naming the id, never a
download. Download a dataset once where the network is allowed, then name it in a spec.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from app.core.refs import HubDatasetRef
from app.data.errors import DataError
from app.data.limits import Limits

DEFAULT_SPLIT = "train"
_EXPORT_BATCH_ROWS = 10_000


def hub_cache_dir() -> Path:
    """The 🤗 datasets cache this process reads (``HF_DATASETS_CACHE`` / ``HF_HOME`` as ``datasets`` saw them)."""
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE)


def _not_cached(ref: HubDatasetRef, cache: Path, field: str, detail: str = "") -> DataError:
    return DataError(
        "no_source", f"the 🤗 dataset {ref.repo_id!r} is not in the local datasets cache ({cache}){detail}",
        field=field, hint=f"The studio never downloads: load it once with datasets.load_dataset({ref.repo_id!r}"
                          + (f", {ref.config!r}" if ref.config else "") + ") where the network is allowed, "
                          "or upload the data as a file",
    )


def _builder(ref: HubDatasetRef, cache: Path, field: str) -> Any:
    from datasets.packaged_modules.cache.cache import Cache

    if not any(cache.glob(f"{_cache_folder(ref.repo_id)}/*/*/*")):
        raise _not_cached(ref, cache, field)
    try:
        return Cache(cache_dir=str(cache), repo_id=ref.repo_id, dataset_name=ref.repo_id.split("/")[-1],
                     config_name=ref.config, version="auto", hash="auto")
    except ValueError as exc:  # no such configuration cached, or several and none chosen
        configs = sorted({p.parent.parent.name for p in cache.glob(f"{_cache_folder(ref.repo_id)}/*/*/*")})
        if ref.config is None and len(configs) > 1:
            raise DataError("no_source", f"the 🤗 dataset {ref.repo_id!r} has several configurations cached "
                            f"({', '.join(configs)}); name one", field=field,
                            hint=f"Write it as {ref.repo_id}:<configuration>:<split>, "
                                 f"for example {ref.repo_id}:{configs[0]}:{DEFAULT_SPLIT}") from None
        if ref.config:
            detail = f" as configuration {ref.config!r} (cached: {', '.join(configs) or 'none'})"
        else:
            detail = f" ({exc})"
        raise _not_cached(ref, cache, field, detail) from None


def _cache_folder(repo_id: str) -> str:
    from datasets.naming import camelcase_to_snakecase

    namespace, name = repo_id.split("/")
    return f"{namespace}___{camelcase_to_snakecase(name)}"


def cached_split(ref: HubDatasetRef, cache_dir: Path | None = None, field: str = "data.dataset") -> tuple[Any, str]:
    """(the cache reader, the split to read) for ``ref``; DataError ``no_source`` if it is not cached.

    Without a split, ``train`` is read, or the only split there is.
    """
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    builder = _builder(ref, cache, field)
    splits = list(builder.info.splits or {})
    split = ref.split
    if split is None:
        split = DEFAULT_SPLIT if DEFAULT_SPLIT in splits or len(splits) != 1 else splits[0]
    if split not in splits:
        raise DataError("no_source", f"the 🤗 dataset {ref.repo_id!r} has no split {split!r} in the local cache",
                        field=field, hint=f"Its cached splits: {', '.join(splits) or 'none'}; "
                                          f"write it as {ref.repo_id}:<split>")
    return builder, split


def load_cached_dataset(ref: HubDatasetRef, cache_dir: Path | None = None, field: str = "data.dataset") -> Any:
    """The cached split as a memory-mapped ``datasets.Dataset`` (no copy, no network)."""
    builder, split = cached_split(ref, cache_dir, field)
    return builder.as_dataset(split=split)


def export_split(ref: HubDatasetRef, folder: Path, cache_dir: Path | None = None, limits: Limits | None = None,
                 field: str = "data.dataset") -> Path:
    """The cached split written once as a Parquet file under ``folder``, for the file readers.

    Class labels are written as their names (a classifier learns "positive", not 1); a missing label
    (-1) stays empty, so the row check names it. The file is keyed by the cache entry it came from
    (configuration, version, hash), written batch by batch to a temporary file and renamed into place.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from datasets import ClassLabel

    limits = limits or Limits()
    builder, split = cached_split(ref, cache_dir, field)
    entry = Path(builder.cache_dir)
    namespace, name = ref.repo_id.split("/")
    target = Path(folder) / _cache_folder(ref.repo_id) / entry.parent.parent.name / entry.parent.name / entry.name \
        / f"{namespace}--{name}--{split}.parquet"
    if target.is_file():
        return target
    dataset = builder.as_dataset(split=split)
    if dataset.num_rows > limits.max_rows:
        raise DataError("too_many_rows", f"the 🤗 dataset {ref} has {dataset.num_rows:,} rows, more than the "
                        f"{limits.max_rows:,} allowed", field=field, hint="Name a smaller split or a sample of it")
    names = {c: pa.array(f.names) for c, f in dataset.features.items() if isinstance(f, ClassLabel)}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".parquet")
    os.close(fd)
    writer = None
    try:
        for batch in dataset.with_format("arrow").iter(batch_size=_EXPORT_BATCH_ROWS):
            for column, labels in names.items():
                ids = batch[column]
                known = pc.if_else(pc.less(ids, 0), pa.scalar(None, ids.type), ids)
                batch = batch.set_column(batch.schema.get_field_index(column), column, pc.take(labels, known))
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema)
            writer.write_table(batch)
        if writer is None:  # an empty split: a file with the columns and no rows, refused as header_only
            pq.write_table(dataset.with_format("arrow")[:0], tmp)
        else:
            writer.close()
            writer = None
        os.replace(tmp, target)
    except BaseException:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return target

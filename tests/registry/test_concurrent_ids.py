"""Registrations at the same moment get distinct ids, and the same bytes one row.

The page can fire a demo pick twice, two tabs can upload at once, the CLI can add beside the studio: each
is its own connection and transaction. On SQLite ``SELECT ... FOR UPDATE`` locks nothing, so reading the
id counter before writing it let two of them compute the same id ("UNIQUE constraint failed:
datasets.id", the browser then never showed the data). Real threads, real connections, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.core.settings import Settings
from app.services import Context, create_run
from app.services.datasets import add_dataset, list_datasets

THREADS = 8
ROUNDS = 3


def _at_once(fn, args: list) -> list:
    barrier = threading.Barrier(len(args))

    def call(arg):
        barrier.wait()
        return fn(arg)

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(call, args))


def _check(ctx: Context, tmp_path) -> None:
    for round_ in range(ROUNDS):
        files = []
        for i in range(THREADS):
            path = tmp_path / f"r{round_}-{i}.csv"
            path.write_text(f"text,label\nround {round_} file {i},1\nother,0\n")
            files.append(path)
        ids = [view.id for view in _at_once(lambda p: add_dataset(ctx, p), files)]
        assert len(set(ids)) == THREADS, ids

        same = tmp_path / f"same-{round_}.csv"
        same.write_text(f"text,label\nthe same bytes {round_},1\nagain,0\n")
        assert len({view.id for view in _at_once(lambda p: add_dataset(ctx, p), [same] * 4)}) == 1

        spec = {"name": "at-once", "model": {"name": "SmolLM2-135M-Instruct"}, "data": {"dataset": str(files[0])},
                "method": {"peft_type": "LORA", "r": 4, "target_modules": "attention"}}
        run_ids = _at_once(lambda s: create_run(ctx, s), [spec] * THREADS)
        assert len(set(run_ids)) == THREADS, run_ids
    assert len(list_datasets(ctx)) == ROUNDS * (THREADS + 1)


def _context(tmp_path, url: str | None = None) -> Context:
    env = {"TUNESTUDIO_HOME": str(tmp_path / "home"), "TUNESTUDIO_DATA_ROOTS": str(tmp_path)}
    if url:
        env["TUNESTUDIO_DATABASE_URL"] = url
    return Context.open(Settings.from_env(env))


def test_registrations_at_once_on_sqlite(tmp_path):
    ctx = _context(tmp_path)
    try:
        _check(ctx, tmp_path)
    finally:
        ctx.close()


@pytest.mark.integration
def test_registrations_at_once_on_postgresql(tmp_path, pg_url):
    ctx = _context(tmp_path, pg_url)
    try:
        _check(ctx, tmp_path)
    finally:
        ctx.close()

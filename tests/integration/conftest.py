from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import redis

from app.core.settings import Settings
from app.services import Context, get_run
from tests.engine.helpers import save_tiny_model, write_mapping_csv
from worker.embedded import EmbeddedWorker

FAST_LIVENESS = {"TUNESTUDIO_HEARTBEAT_SECONDS": "0.5", "TUNESTUDIO_WORKER_LOST_SECONDS": "5"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    return save_tiny_model(root / "llama"), write_mapping_csv(root / "colours.csv")


def wait_for(ctx: Context, run_id: int, predicate, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_run(ctx, run_id)
        if predicate(run):
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached the expected state; last: {run.status} step {run.step}")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """SQLite registry + SQLite broker (kombu SQLAlchemy transport) + one worker subprocess."""
    home = tmp_path_factory.mktemp("embedded-home")
    settings = Settings.from_env({"TUNESTUDIO_HOME": str(home), **FAST_LIVENESS,
                                  "TUNESTUDIO_DATA_ROOTS": str(tmp_path_factory.getbasetemp())})
    ctx = Context.open(settings)
    worker = EmbeddedWorker(settings).start()
    yield ctx, worker
    worker.stop()
    ctx.close()


@pytest.fixture(scope="module")
def scaled_out(tmp_path_factory):
    """A dedicated PostgreSQL database and Redis db on the machine's servers, dropped afterwards."""
    try:
        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True)
        r = redis.Redis(host="127.0.0.1", port=6379, db=11)
        r.ping()
    except (psycopg.OperationalError, redis.ConnectionError) as exc:
        pytest.skip(f"PostgreSQL/Redis not reachable: {exc}")
    name = f"tunestudio_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    r.flushdb()
    home = tmp_path_factory.mktemp("scaled-home")
    settings = Settings.from_env({
        "TUNESTUDIO_HOME": str(home),
        "TUNESTUDIO_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        "TUNESTUDIO_BROKER_URL": "redis://127.0.0.1:6379/11",
        "TUNESTUDIO_DATA_ROOTS": str(tmp_path_factory.getbasetemp()),
        **FAST_LIVENESS,
    })
    ctx = Context.open(settings)
    yield ctx
    ctx.close()
    r.flushdb()
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()

from __future__ import annotations

import uuid

import psycopg
import pytest

from app.core.settings import Settings
from app.services import Context

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home"), "TUNESTUDIO_DATA_ROOTS": str(tmp_path)})


@pytest.fixture
def ctx(settings):
    ctx = Context.open(settings)
    yield ctx
    ctx.close()


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"tunestudio_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

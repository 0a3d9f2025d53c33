from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.registry import Base, downgrade, make_engine, upgrade

TABLES = {"runs", "metric_points", "log_lines", "datasets", "artifacts", "id_counters"}


def _roundtrip(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) >= TABLES
        for table in Base.metadata.sorted_tables:
            db_columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert db_columns == {c.name for c in table.columns}, table.name
        with engine.begin() as conn:
            assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0004"
        downgrade(engine, "base")
        assert not TABLES & set(sa.inspect(engine).get_table_names())
        upgrade(engine)
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_migrations_upgrade_and_downgrade_on_sqlite(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'registry.sqlite'}")


@pytest.mark.integration
def test_migrations_upgrade_and_downgrade_on_postgresql(pg_url):
    _roundtrip(pg_url)


def test_sqlite_registry_uses_wal(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_migrations_run_from_the_alembic_ini_shipped_in_the_package(tmp_path):
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    import migrations

    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    cfg = Config(str(Path(migrations.__file__).parent / "alembic.ini"), cmd_opts=None)
    cfg.cmd_opts = type("Opts", (), {"x": [f"url={url}"]})()
    command.upgrade(cfg, "head")
    engine = make_engine(url)
    assert "runs" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_id_counters_start_above_the_rows_a_registry_already_has(tmp_path):
    from app.registry.db import session_factory
    from app.registry.ids import issue_id
    from app.registry.models import Run

    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            for run_id in (1, 2, 5):
                conn.execute(sa.text(
                    "INSERT INTO runs (id, name, status, spec, model, method, created_at, step) "
                    "VALUES (:id, 'old', 'succeeded', '{}', 'm', 'LORA', '2026-01-01', 0)"), {"id": run_id})
        upgrade(engine)
        with session_factory(engine)() as s:
            assert issue_id(s, Run) == 6
    finally:
        engine.dispose()

"""Initial registry schema: runs, metric points, log lines, datasets, artifacts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("method", sa.String(50), nullable=False),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        _ts("heartbeat_at"),
        sa.Column("worker_host", sa.String(255)),
        sa.Column("error", sa.Text()),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer()),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "metric_points",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=False),
        sa.Column("split", sa.String(10), nullable=False),
        sa.Column("loss", sa.Float()),
        sa.Column("learning_rate", sa.Float()),
        sa.Column("tokens_per_second", sa.Float()),
        sa.Column("grad_norm", sa.Float()),
        sa.Column("accuracy", sa.Float()),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_metric_points_run_step", "metric_points", ["run_id", "step"])
    op.create_table(
        "log_lines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_log_lines_run", "log_lines", ["run_id", "id"])
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("shape", sa.String(30)),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_datasets_sha256", "datasets", ["sha256"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer()),
        _ts("created_at", nullable=False),
    )
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_run_id", table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_index("ix_datasets_sha256", table_name="datasets")
    op.drop_table("datasets")
    op.drop_index("ix_log_lines_run", table_name="log_lines")
    op.drop_table("log_lines")
    op.drop_index("ix_metric_points_run_step", table_name="metric_points")
    op.drop_table("metric_points")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_table("runs")

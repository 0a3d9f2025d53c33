"""Id counters: run and dataset ids are never reused after a delete (app/registry/ids.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counters = op.create_table(
        "id_counters",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("last_id", sa.Integer(), nullable=False),
    )
    bind = op.get_bind()
    rows = [
        {"name": table, "last_id": bind.scalar(sa.text(f"SELECT COALESCE(MAX(id), 0) FROM {table}"))}
        for table in ("runs", "datasets")
    ]
    op.bulk_insert(counters, rows)


def downgrade() -> None:
    op.drop_table("id_counters")

"""runs.attempt and runs.resumed_from_step: a stopped run is re-queued and resumes from its checkpoint.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, as in 0003: a batch rebuild of `runs` would cascade into its metrics and logs on SQLite.
def upgrade() -> None:
    op.add_column("runs", sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("runs", sa.Column("resumed_from_step", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "resumed_from_step")
    op.drop_column("runs", "attempt")

"""runs.sent_at: when "start run N" last went to the broker, so a lost message is re-sent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on both databases (SQLite >= 3.35 drops columns in place): a batch rebuild of
# `runs` would drop the table, and with foreign keys on SQLite would cascade into its metrics and logs.
def upgrade() -> None:
    op.add_column("runs", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "sent_at")

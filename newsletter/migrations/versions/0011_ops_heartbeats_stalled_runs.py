"""scheduler heartbeats; when a run was found stalled

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_heartbeats",
        sa.Column("scheduler", sa.String(length=200), nullable=False),
        sa.Column("ticked_at", newsletter.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scheduler", name=op.f("pk_scheduler_heartbeats")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stalled_at", newsletter.db.UtcDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("stalled_at")
    op.drop_table("scheduler_heartbeats")

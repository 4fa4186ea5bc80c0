"""bounces, soft bounce counts, hashed suppressions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("event_id", sa.String(length=500), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.String(length=2000), nullable=False),
        sa.Column("received_at", newsletter.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_events")),
        sa.UniqueConstraint("source", "event_id", name=op.f("uq_bounce_events_source_event_id")),
    )
    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bounce_events_email"), ["email"], unique=False)

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("soft_bounces", sa.Integer(), nullable=False, server_default="0")
        )

    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_hash", sa.String(length=64), nullable=True))
        batch_op.alter_column("email", existing_type=sa.VARCHAR(length=320), nullable=True)
        batch_op.create_unique_constraint(batch_op.f("uq_suppressions_email_hash"), ["email_hash"])


def downgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_suppressions_email_hash"), type_="unique")
        batch_op.alter_column("email", existing_type=sa.VARCHAR(length=320), nullable=False)
        batch_op.drop_column("email_hash")

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("soft_bounces")

    with op.batch_alter_table("bounce_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounce_events_email"))

    op.drop_table("bounce_events")

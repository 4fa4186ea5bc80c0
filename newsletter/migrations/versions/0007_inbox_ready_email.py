"""inbox-ready email: sender identity and archive visibility per list, unguessable
archive keys for runs, image alt text for articles

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        for name in ("organization", "postal_address", "footer_note"):
            batch_op.add_column(
                sa.Column(name, sa.String(length=500), nullable=False, server_default="")
            )
        # Lists that exist keep the public archive they had; new lists are private
        # (the model's default).
        batch_op.add_column(
            sa.Column("archive", sa.String(length=20), nullable=False, server_default="public")
        )
    with op.batch_alter_table("articles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("image_alt", sa.String(length=1000), nullable=False, server_default="")
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("archive_key", sa.String(length=32), nullable=True))
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("archive_key", sa.String))
    connection = op.get_bind()
    for (run_id,) in connection.execute(sa.select(runs.c.id)).all():
        connection.execute(
            runs.update().where(runs.c.id == run_id).values(archive_key=secrets.token_urlsafe(16))
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.alter_column("archive_key", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_runs_archive_key"), ["archive_key"])


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_runs_archive_key"), type_="unique")
        batch_op.drop_column("archive_key")
    with op.batch_alter_table("articles", schema=None) as batch_op:
        batch_op.drop_column("image_alt")
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        for name in ("archive", "footer_note", "postal_address", "organization"):
            batch_op.drop_column(name)

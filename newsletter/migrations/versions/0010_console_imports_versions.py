"""staff console: background subscriber imports (the CSV held until done, progress)
and every saved version of a stored template

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC = newsletter.db.UtcDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("subscriber_imports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("total", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("processed", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("progress_at", UTC, nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "template_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("saved_by", sa.String(length=400), nullable=False),
        sa.Column("saved_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_template_versions_template_id_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
        sa.UniqueConstraint(
            "template_id", "version", name=op.f("uq_template_versions_template_id_version")
        ),
    )


def downgrade() -> None:
    op.drop_table("template_versions")
    with op.batch_alter_table("subscriber_imports", schema=None) as batch_op:
        for name in ("error", "progress_at", "processed", "total", "source_text"):
            batch_op.drop_column(name)

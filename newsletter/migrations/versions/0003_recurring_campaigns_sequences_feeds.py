"""recurring campaigns, sequences, feeds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import newsletter.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feeds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("every_seconds", sa.Integer(), nullable=False),
        sa.Column("next_poll_at", newsletter.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_polled_at", newsletter.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("etag", sa.String(length=500), nullable=False),
        sa.Column("modified", sa.String(length=200), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", newsletter.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name=op.f("fk_feeds_series_id_series"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feeds")),
        sa.UniqueConstraint("url", name=op.f("uq_feeds_url")),
    )
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feeds_next_poll_at"), ["next_poll_at"], unique=False)

    op.create_table(
        "sequences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("every_seconds", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(length=100), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("initial_delay_seconds", sa.Integer(), nullable=False),
        sa.Column("restart_on_rejoin", sa.Boolean(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "paused", name="sequencestatus", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("created_at", newsletter.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["mailing_lists.id"],
            name=op.f("fk_sequences_list_id_mailing_lists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name=op.f("fk_sequences_series_id_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sequences")),
        sa.UniqueConstraint("series_id", "list_id", name=op.f("uq_sequences_series_id_list_id")),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("next_due_at", newsletter.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "caught_up",
                "paused",
                "stopped",
                name="enrollmentstatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("created_at", newsletter.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", newsletter.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence_id"],
            ["sequences.id"],
            name=op.f("fk_enrollments_sequence_id_sequences"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_enrollments_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint(
            "sequence_id", "subscriber_id", name=op.f("uq_enrollments_sequence_id_subscriber_id")
        ),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_enrollments_due", ["status", "next_due_at"], unique=False)

    with op.batch_alter_table("articles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("guid", sa.String(length=2000), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_articles_guid"), ["guid"])

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cron", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("skip_if_empty", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("local_time", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC")
        )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sequence_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("article_id", sa.Integer(), nullable=True))
        batch_op.alter_column("campaign_id", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_unique_constraint(
            batch_op.f("uq_runs_sequence_id_article_id"), ["sequence_id", "article_id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_article_id_articles"),
            "articles",
            ["article_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_runs_sequence_id_sequences"),
            "sequences",
            ["sequence_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_runs_sequence_id_sequences"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_runs_article_id_articles"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_runs_sequence_id_article_id"), type_="unique")
        batch_op.alter_column("campaign_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("article_id")
        batch_op.drop_column("sequence_id")

    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("timezone")

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("local_time")
        batch_op.drop_column("skip_if_empty")
        batch_op.drop_column("cron")

    with op.batch_alter_table("articles", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_articles_guid"), type_="unique")
        batch_op.drop_column("guid")

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_due")

    op.drop_table("enrollments")
    op.drop_table("sequences")
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feeds_next_poll_at"))

    op.drop_table("feeds")

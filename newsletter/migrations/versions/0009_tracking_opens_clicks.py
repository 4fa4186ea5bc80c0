"""opens and clicks: tracking modes per list, campaign and reader; tracked links,
events, rollups and per-message firsts; first open and click on the ledger

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite: the ledger may be large, and the
    # subscribers' index on lower(email) would not survive a rebuild).
    false = sa.false()
    op.add_column(
        "mailing_lists",
        sa.Column("tracking", sa.String(length=20), nullable=False, server_default="anonymous"),
    )
    op.add_column(
        "mailing_lists",
        sa.Column("track_opens", sa.Boolean(), nullable=False, server_default=false),
    )
    op.add_column("campaigns", sa.Column("tracking", sa.String(length=20), nullable=True))
    op.add_column("campaigns", sa.Column("track_opens", sa.Boolean(), nullable=True))
    op.add_column(
        "subscribers", sa.Column("no_tracking", sa.Boolean(), nullable=False, server_default=false)
    )
    op.add_column(
        "runs", sa.Column("forgotten_sent", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "runs",
        sa.Column(
            "tracking",
            sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
    )
    op.add_column("deliveries", sa.Column("first_open_at", sa.DateTime(timezone=True)))
    op.add_column(
        "deliveries",
        sa.Column("first_open_machine", sa.Boolean(), nullable=False, server_default=false),
    )
    op.add_column("deliveries", sa.Column("first_click_at", sa.DateTime(timezone=True)))
    op.add_column(
        "deliveries",
        sa.Column("first_click_machine", sa.Boolean(), nullable=False, server_default=false),
    )
    op.create_index("ix_deliveries_subscriber_sent", "deliveries", ["subscriber_id", "sent_at"])
    op.create_table(
        "tracked_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_tracked_links_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_links")),
        sa.UniqueConstraint("run_id", "url_hash", name=op.f("uq_tracked_links_run_id_url_hash")),
    )
    op.create_table(
        "tracking_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("message_key", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent_class", sa.String(length=40), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("machine_reason", sa.String(length=200), nullable=False),
        sa.Column("client_hash", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_tracking_events_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["tracked_links.id"],
            name=op.f("fk_tracking_events_link_id_tracked_links"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_tracking_events_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_events")),
    )
    op.create_index(
        "ix_tracking_events_run_message",
        "tracking_events",
        ["run_id", "message_key", "occurred_at"],
    )
    op.create_index("ix_tracking_events_occurred_at", "tracking_events", ["occurred_at"])
    op.create_index("ix_tracking_events_delivery", "tracking_events", ["delivery_id"])
    op.create_table(
        "tracking_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("human", sa.Integer(), nullable=False),
        sa.Column("machine", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_tracking_rollups_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_rollups")),
        sa.UniqueConstraint(
            "run_id",
            "list_id",
            "kind",
            "link_id",
            "bucket",
            name=op.f("uq_tracking_rollups_run_id_list_id_kind_link_id_bucket"),
        ),
    )
    op.create_table(
        "tracked_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("message_key", sa.String(length=32), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("machine_opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("machine_clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_tracked_messages_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_tracked_messages_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_messages")),
        sa.UniqueConstraint(
            "run_id", "message_key", name=op.f("uq_tracked_messages_run_id_message_key")
        ),
    )
    op.create_index("ix_tracked_messages_delivery", "tracked_messages", ["delivery_id"])
    op.create_table(
        "tracked_message_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("machine_clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["tracked_messages.id"],
            name=op.f("fk_tracked_message_links_message_id_tracked_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["tracked_links.id"],
            name=op.f("fk_tracked_message_links_link_id_tracked_links"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_tracked_message_links_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_message_links")),
        sa.UniqueConstraint(
            "message_id", "link_id", name=op.f("uq_tracked_message_links_message_id_link_id")
        ),
    )
    op.create_index(
        "ix_tracked_message_links_run_link", "tracked_message_links", ["run_id", "link_id"]
    )


def downgrade() -> None:
    op.drop_table("tracked_message_links")
    op.drop_table("tracked_messages")
    op.drop_table("tracking_rollups")
    op.drop_table("tracking_events")
    op.drop_table("tracked_links")
    op.drop_index("ix_deliveries_subscriber_sent", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        for name in (
            "first_click_machine",
            "first_click_at",
            "first_open_machine",
            "first_open_at",
        ):
            batch_op.drop_column(name)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("tracking")
        batch_op.drop_column("forgotten_sent")
    # SQLite rebuilds the table to drop a column and cannot carry an index on an
    # expression across: drop it first, make it again after.
    op.drop_index("uq_subscribers_email_canonical", table_name="subscribers")
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("no_tracking")
    op.create_index(
        "uq_subscribers_email_canonical", "subscribers", [sa.text("lower(email)")], unique=True
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("track_opens")
        batch_op.drop_column("tracking")
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("track_opens")
        batch_op.drop_column("tracking")

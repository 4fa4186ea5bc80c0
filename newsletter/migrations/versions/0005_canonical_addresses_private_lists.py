"""canonical (lower-case) addresses, subscriber ids never reused, private lists

Addresses are stored in one canonical spelling from now on (audience/addresses.py).
Existing case variants of one address are merged into the oldest subscriber: their
subscriptions (a list left under either spelling stays left), enrollments, ledger rows,
soft bounces, name and attributes; suppressions likewise. A unique index on
lower(email) keeps it so. On SQLite, subscriber ids are never reused (AUTOINCREMENT),
so a forgotten person's old links cannot open a newcomer's preferences. Lists gain a
`public` flag (existing lists stay public; new ones are private unless asked).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LEAST_MAILING = {"unsubscribed": 0, "unconfirmed": 1, "confirmed": 2}


def _merge_into(bind: Any, keep: int, dup: int) -> None:
    """Everything of subscriber `dup` moves to `keep`; then `dup` is deleted."""
    subs = bind.execute(
        sa.text("SELECT list_id, status, id FROM subscriptions WHERE subscriber_id = :s"),
        {"s": keep},
    ).all()
    kept = {list_id: (status, sid) for list_id, status, sid in subs}
    for list_id, status, sid in bind.execute(
        sa.text("SELECT list_id, status, id FROM subscriptions WHERE subscriber_id = :s"),
        {"s": dup},
    ).all():
        if list_id not in kept:
            bind.execute(
                sa.text("UPDATE subscriptions SET subscriber_id = :k WHERE id = :i"),
                {"k": keep, "i": sid},
            )
            continue
        # Left under either spelling: left. Else confirmed under either: confirmed.
        mine, mine_id = kept[list_id]
        if status == "unsubscribed" or (status == "confirmed" and mine == "unconfirmed"):
            bind.execute(
                sa.text("UPDATE subscriptions SET status = :st WHERE id = :i"),
                {"st": status, "i": mine_id},
            )
        bind.execute(sa.text("DELETE FROM subscriptions WHERE id = :i"), {"i": sid})
    for table, key in (("enrollments", "sequence_id"), ("deliveries", "run_id")):
        bind.execute(
            sa.text(
                f"DELETE FROM {table} WHERE subscriber_id = :d AND {key} IN "
                f"(SELECT {key} FROM {table} WHERE subscriber_id = :k)"
            ),
            {"d": dup, "k": keep},
        )
        bind.execute(
            sa.text(f"UPDATE {table} SET subscriber_id = :k WHERE subscriber_id = :d"),
            {"k": keep, "d": dup},
        )
    bind.execute(
        sa.text(
            "UPDATE subscribers SET soft_bounces = soft_bounces + "
            "(SELECT soft_bounces FROM subscribers WHERE id = :d) WHERE id = :k"
        ),
        {"k": keep, "d": dup},
    )
    bind.execute(
        sa.text(
            "UPDATE subscribers SET name = (SELECT name FROM subscribers WHERE id = :d) "
            "WHERE id = :k AND name = ''"
        ),
        {"k": keep, "d": dup},
    )
    bind.execute(sa.text("DELETE FROM subscribers WHERE id = :d"), {"d": dup})


def _merge_case_duplicates(bind: Any) -> None:
    groups = bind.execute(
        sa.text("SELECT lower(email) FROM subscribers GROUP BY lower(email) HAVING count(*) > 1")
    ).scalars()
    for canonical in list(groups):
        ids = bind.execute(
            sa.text("SELECT id FROM subscribers WHERE lower(email) = :e ORDER BY id"),
            {"e": canonical},
        ).scalars()
        keep, *dups = list(ids)
        for dup in dups:
            _merge_into(bind, keep, dup)
    bind.execute(
        sa.text(
            "DELETE FROM suppressions WHERE email IS NOT NULL AND id NOT IN "
            "(SELECT min(id) FROM suppressions WHERE email IS NOT NULL GROUP BY lower(email))"
        )
    )
    for table in ("subscribers", "suppressions", "deliveries", "bounce_events"):
        bind.execute(
            sa.text(f"UPDATE {table} SET email = lower(email) WHERE email != lower(email)")
        )


def upgrade() -> None:
    bind = op.get_bind()
    _merge_case_duplicates(bind)
    if bind.dialect.name == "sqlite":
        # AUTOINCREMENT: an id is never handed out twice, even after the last row went.
        with op.batch_alter_table(
            "subscribers", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    op.create_index(
        "uq_subscribers_email_canonical", "subscribers", [sa.text("lower(email)")], unique=True
    )
    op.create_index(
        "uq_suppressions_email_canonical", "suppressions", [sa.text("lower(email)")], unique=True
    )
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("public", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("mailing_lists", schema=None) as batch_op:
        batch_op.drop_column("public")
    op.drop_index("uq_suppressions_email_canonical", table_name="suppressions")
    op.drop_index("uq_subscribers_email_canonical", table_name="subscribers")

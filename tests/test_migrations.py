"""Schema migrations that move data, on PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from newsletter.db import downgrade, make_engine, upgrade
from tests.conftest import PG_ADMIN_URL

BEFORE_INBOX_READY = "0006"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A database with no schema yet (migrations run step by step)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'm.db'}")
        yield engine
        engine.dispose()
        return
    name = f"newsletter_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_inbox_ready_keeps_existing_archives_public_and_gives_every_run_a_random_key(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine, BEFORE_INBOX_READY)
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mailing_lists (slug, name, description, timezone, opt_in, created_at)"
                " VALUES ('old-news', 'Old news', '', 'UTC', 'double', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO campaigns (name, subject, preheader, template, content_kind,"
                " content_args, status, timezone, skip_if_empty, local_time, created_at,"
                " updated_at) VALUES ('c', 's', '', 'digest', 'latest', '{}', 'finished', 'UTC',"
                " false, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        for day in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO runs (campaign_id, occurrence_at, status, recipients,"
                    " created_at, error) VALUES (1, :at, 'finished', 0, CURRENT_TIMESTAMP, '')"
                ),
                {"at": f"2026-11-0{day} 09:00:00+00:00"},
            )

    upgrade(empty_engine)

    with empty_engine.connect() as conn:
        archive, address = conn.execute(
            text("SELECT archive, postal_address FROM mailing_lists")
        ).one()
        keys = conn.execute(text("SELECT archive_key FROM runs ORDER BY id")).scalars().all()
    assert (archive, address) == ("public", "")
    assert len(set(keys)) == 2 and all(len(k) >= 22 for k in keys)

    downgrade(empty_engine, BEFORE_INBOX_READY)
    upgrade(empty_engine)


def test_tracking_gives_existing_lists_anonymous_counts_and_readers_their_tracking_choice(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine, "0008")
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mailing_lists (slug, name, description, timezone, opt_in, created_at,"
                " public, organization, postal_address, footer_note, archive)"
                " VALUES ('news', 'News', '', 'UTC', 'double', CURRENT_TIMESTAMP, false, '', '',"
                " '', 'private')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO subscribers (email, name, attributes, created_at, soft_bounces)"
                " VALUES ('ann@example.org', 'Ann', '{}', CURRENT_TIMESTAMP, 0)"
            )
        )

    upgrade(empty_engine)

    with empty_engine.connect() as conn:
        tracking, opens = conn.execute(
            text("SELECT tracking, track_opens FROM mailing_lists")
        ).one()
        no_tracking = conn.execute(text("SELECT no_tracking FROM subscribers")).scalar_one()
    assert (tracking, bool(opens), bool(no_tracking)) == ("anonymous", False, False)

    downgrade(empty_engine, "0008")
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM subscribers")).scalar_one() == 1


def test_totp_pending_starts_empty_and_going_down_keeps_the_factor_on_and_the_tokens(
    empty_engine: Engine,
) -> None:
    upgrade(empty_engine, "0012")
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (email, name, role, password_hash, totp_secret, disabled,"
                " created_at, updated_at) VALUES ('ann@clinic.example', 'Ann', 'admin', 'x',"
                " 'JBSWY3DPEHPK3PXP', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO api_tokens (user_id, name, prefix, token_hash, scopes, created_at)"
                " VALUES (1, 'ci', 'nl_abc', 'hash', '[]', CURRENT_TIMESTAMP)"
            )
        )

    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        assert conn.execute(text("SELECT totp_secret, totp_pending_secret FROM users")).one() == (
            "JBSWY3DPEHPK3PXP",
            None,
        )
        conn.execute(text("UPDATE users SET totp_pending_secret = 'KRSXG5CTMVRXEZLU'"))

    downgrade(empty_engine, "0012")
    with empty_engine.connect() as conn:
        assert (
            conn.execute(text("SELECT totp_secret FROM users")).scalar_one() == "JBSWY3DPEHPK3PXP"
        )
        assert conn.execute(text("SELECT count(*) FROM api_tokens")).scalar_one() == 1
    upgrade(empty_engine)

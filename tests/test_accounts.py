"""Accounts on both databases: the schema matches the models, the audit log is
append-only, tokens and passwords are never stored in the clear."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.accounts.models import ApiToken, AuditEntry, User
from newsletter.accounts.passwords import verify_password
from newsletter.accounts.tokens import create_token, revoke_token, token_user
from newsletter.accounts.users import create_user
from newsletter.audience.addresses import email_hash
from newsletter.db import downgrade, upgrade
from newsletter.models import Base
from newsletter.services.data_rights import forget
from tests.factories import add_member, make_list

PASSWORD = "correct horse battery staple"


def test_the_migrated_schema_matches_the_models_and_goes_down_and_up(engine: Engine) -> None:
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    downgrade(engine, "0004")
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_the_audit_log_refuses_updates_and_deletes(session: Session) -> None:
    audit.act_as(session, audit.Actor.cli())
    audit.record(session, "list.create", "list:news")
    session.commit()
    for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))
        session.rollback()
    assert session.scalar(select(AuditEntry.action)) == "list.create"


def test_tokens_and_passwords_are_stored_hashed(session: Session) -> None:
    user = create_user(session, "Ann@Clinic.example", "editor", password=PASSWORD)
    made = create_token(session, user, ["articles:write"])
    session.commit()
    stored = session.scalar(select(ApiToken))
    assert stored is not None and made.token not in (stored.token_hash, stored.prefix)
    assert made.token.startswith(stored.prefix) and len(made.token) >= 3 + 43
    assert PASSWORD not in session.get_one(User, user.id).password_hash
    assert verify_password(user.password_hash, PASSWORD)
    assert token_user(session, made.token) is not None
    revoke_token(session, stored)
    assert token_user(session, made.token) is None


def test_forgetting_a_person_is_audited_without_their_address(session: Session) -> None:
    news = make_list(session)
    add_member(session, news, "ann@example.org", "Ann")
    audit.act_as(session, audit.Actor.cli())
    forget(session, "ann@example.org")
    session.commit()
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "subscriber.forget"))
    assert entry is not None
    assert entry.target == f"email_hash:{email_hash('ann@example.org')}"
    every = [str(e.target) + str(e.detail) for e in session.scalars(select(AuditEntry))]
    assert not any("ann@example.org" in text for text in every)


def test_without_an_actor_nothing_is_audited(session: Session) -> None:
    make_list(session)
    session.commit()
    assert session.scalar(select(AuditEntry)) is None

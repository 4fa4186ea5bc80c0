"""Accounts on both databases: the schema matches the models, the audit log is
append-only, tokens and passwords are never stored in the clear, a second factor is
on only once a first code confirms it and can be removed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.accounts.models import ApiToken, AuditEntry, StaffSession, User
from newsletter.accounts.passwords import verify_password
from newsletter.accounts.sessions import Login, SecondFactorRequired, log_in
from newsletter.accounts.tokens import create_token, revoke_token, token_user
from newsletter.accounts.totp import WrongCode, current_code
from newsletter.accounts.users import (
    confirm_totp,
    create_user,
    remove_own_totp,
    remove_totp,
    start_totp,
)
from newsletter.audience.addresses import email_hash
from newsletter.db import downgrade, upgrade
from newsletter.models import Base
from newsletter.services.data_rights import forget
from tests.factories import add_member, make_list, wrong_totp_code

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


# --- the second factor -------------------------------------------------------------------


def _ann(session: Session) -> User:
    audit.act_as(session, audit.Actor.cli())
    user = create_user(session, "ann@clinic.example", "editor", password=PASSWORD)
    session.commit()
    return user


def _log_in(session: Session, code: str | None = None) -> Login:
    return log_in(
        session,
        "ann@clinic.example",
        PASSWORD,
        code,
        ip="127.0.0.1",
        user_agent="test",
        lifetime=timedelta(hours=1),
    )


def _totp_actions(session: Session) -> list[str]:
    query = select(AuditEntry.action).where(AuditEntry.action.startswith("user.totp"))
    return list(session.scalars(query.order_by(AuditEntry.id)))


def test_a_set_up_second_factor_is_not_needed_to_log_in_until_confirmed(session: Session) -> None:
    ann = _ann(session)

    setup = start_totp(session, ann)
    session.commit()

    assert ann.totp_secret is None and ann.totp_pending_secret == setup.secret
    assert setup.uri.startswith("otpauth://totp/") and f"secret={setup.secret}" in setup.uri
    assert _log_in(session).user.id == ann.id  # the password alone, as before


def test_a_wrong_first_code_leaves_the_second_factor_off_and_keeps_the_pending_secret(
    session: Session,
) -> None:
    ann = _ann(session)
    setup = start_totp(session, ann)
    session.commit()

    with pytest.raises(WrongCode) as refused:
        confirm_totp(session, ann, wrong_totp_code(setup.secret))
    session.rollback()

    assert refused.value.field == "code"
    assert ann.totp_secret is None and ann.totp_pending_secret == setup.secret
    assert _log_in(session).user.id == ann.id
    assert _totp_actions(session) == ["user.totp.setup"]


def test_the_right_first_code_switches_it_on_ends_sessions_and_login_then_needs_a_code(
    session: Session,
) -> None:
    ann = _ann(session)
    open_before = _log_in(session)
    setup = start_totp(session, ann)

    confirm_totp(session, ann, current_code(setup.secret))
    session.commit()

    assert ann.totp_secret == setup.secret and ann.totp_pending_secret is None
    row = session.scalar(select(StaffSession).where(StaffSession.user_id == ann.id))
    assert row is not None and row.revoked_at is not None and open_before.user.id == ann.id
    with pytest.raises(SecondFactorRequired):
        _log_in(session)
    with pytest.raises(SecondFactorRequired):
        _log_in(session, wrong_totp_code(setup.secret))
    assert _log_in(session, current_code(setup.secret)).user.id == ann.id
    assert _totp_actions(session) == ["user.totp.setup", "user.totp.on"]


def test_setting_up_again_replaces_the_pending_secret_and_the_one_on_keeps_working(
    session: Session,
) -> None:
    ann = _ann(session)
    first = start_totp(session, ann)
    confirm_totp(session, ann, current_code(first.secret))
    abandoned = start_totp(session, ann)
    second = start_totp(session, ann)
    session.commit()

    assert len({first.secret, abandoned.secret, second.secret}) == 3
    assert ann.totp_secret == first.secret and ann.totp_pending_secret == second.secret
    with pytest.raises(SecondFactorRequired):
        _log_in(session, current_code(second.secret))  # pending: not a way in
    assert _log_in(session, current_code(first.secret)).user.id == ann.id
    with pytest.raises(WrongCode):
        confirm_totp(session, ann, current_code(abandoned.secret))


def test_confirming_with_nothing_set_up_names_the_code(session: Session) -> None:
    ann = _ann(session)
    with pytest.raises(WrongCode, match="no authenticator is being set up") as refused:
        confirm_totp(session, ann, "123456")
    assert refused.value.field == "code"


def test_switching_ones_own_second_factor_off_needs_the_password_or_a_code(
    session: Session,
) -> None:
    ann = _ann(session)
    setup = start_totp(session, ann)
    confirm_totp(session, ann, current_code(setup.secret))
    session.commit()
    audit.act_as(session, audit.Actor("ann@clinic.example (console)", "session", ann.id))

    with pytest.raises(WrongCode) as refused:
        remove_own_totp(session, ann, "not the password")
    assert refused.value.field == "proof" and ann.totp_secret is not None
    assert remove_own_totp(session, ann, current_code(setup.secret)) is True
    session.commit()

    assert ann.totp_secret is None and _log_in(session).user.id == ann.id
    off = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.totp.off"))
    assert off is not None and off.user_id == ann.id and off.target == f"user:{ann.id}"
    assert (off.before or {})["totp"] is True and (off.after or {})["totp"] is False


def test_the_password_also_switches_it_off(session: Session) -> None:
    ann = _ann(session)
    confirm_totp(session, ann, current_code(start_totp(session, ann).secret))
    assert remove_own_totp(session, ann, PASSWORD) is True
    assert ann.totp_secret is None


def test_removing_a_second_factor_drops_a_pending_one_and_is_audited_once(
    session: Session,
) -> None:
    ann = _ann(session)
    start_totp(session, ann)

    assert remove_totp(session, ann) is True
    assert remove_totp(session, ann) is False  # nothing left: no second entry
    session.commit()

    assert ann.totp_secret is None and ann.totp_pending_secret is None
    assert _totp_actions(session) == ["user.totp.setup", "user.totp.off"]
    off = session.scalar(select(AuditEntry).where(AuditEntry.action == "user.totp.off"))
    assert off is not None and off.via == "cli"
    assert off.before == {"totp": False, "totp_pending": True}

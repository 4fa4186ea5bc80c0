"""Staff users: created, listed, disabled, given a new password, role or second factor.

Every change is audited and ends the user's sessions where it should (a disabled
user or a new password logs every browser out at once).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit, totp
from newsletter.accounts.models import StaffSession, User
from newsletter.accounts.passwords import hash_password
from newsletter.accounts.roles import LIST_SCOPED_ROLES, Role, parse_role
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def normalise_staff_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidInputError(f"{raw!r} is not an email address")
    return email


def describe_user(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "disabled": user.disabled,
        "totp": user.totp_secret is not None,
        "list_ids": user.list_ids,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


def get_user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == normalise_staff_email(email)))
    if user is None:
        raise NotFoundError(f"no user {email.strip()!r}")
    return user


def get_user_by_id(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def _check_list_scope(role: Role, list_ids: list[int] | None) -> list[int] | None:
    if list_ids is None:
        return None
    if role not in LIST_SCOPED_ROLES:
        raise InvalidInputError(f"only editors and senders can be limited to lists, not {role}")
    return sorted(set(list_ids))


def create_user(
    session: Session,
    email: str,
    role: str,
    *,
    name: str = "",
    password: str | None = None,
    list_ids: list[int] | None = None,
) -> User:
    """A new user; without a password they cannot log in until one is set."""
    address = normalise_staff_email(email)
    checked_role = parse_role(role)
    if len(name) > 300:
        raise InvalidInputError("name is longer than 300 characters")
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise InvalidInputError(f"user {address} already exists")
    user = User(
        email=address,
        name=name.strip(),
        role=checked_role.value,
        password_hash=hash_password(password) if password else "",
        list_ids=_check_list_scope(checked_role, list_ids),
        disabled=False,
    )
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        raise InvalidInputError(f"user {address} already exists") from exc
    audit.record(session, "user.create", f"user:{user.id}", after=_audited(user))
    return user


def _audited(user: User) -> dict[str, Any]:
    return {
        "email": user.email,
        "role": user.role,
        "disabled": user.disabled,
        "list_ids": user.list_ids,
        "totp": user.totp_secret is not None,
    }


def end_sessions(session: Session, user_id: int) -> int:
    """Revoke every open session of the user; returns how many."""
    result = session.execute(
        update(StaffSession)
        .where(StaffSession.user_id == user_id, StaffSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def update_user(
    session: Session,
    user: User,
    *,
    role: str | None = None,
    name: str | None = None,
    disabled: bool | None = None,
    list_ids: list[int] | bool | None = False,
) -> User:
    """Change role, name, the disabled flag or the list scope (`list_ids=None` lifts
    it; False leaves it). Disabling ends the user's sessions at once."""
    before = _audited(user)
    if role is not None:
        user.role = parse_role(role).value
    if name is not None:
        if len(name) > 300:
            raise InvalidInputError("name is longer than 300 characters")
        user.name = name.strip()
    if list_ids is not False:
        user.list_ids = _check_list_scope(Role(user.role), list_ids or None)  # type: ignore[arg-type]
    elif user.list_ids is not None and Role(user.role) not in LIST_SCOPED_ROLES:
        user.list_ids = None
    if disabled is not None:
        user.disabled = disabled
        if disabled:
            end_sessions(session, user.id)
    session.flush()
    after = _audited(user)
    if after != before:
        action = "user.role" if before["role"] != after["role"] else "user.update"
        if before["disabled"] != after["disabled"]:
            action = "user.disable" if user.disabled else "user.enable"
        audit.record(session, action, f"user:{user.id}", before=before, after=after)
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """A new password; every session of the user ends."""
    user.password_hash = hash_password(password)
    end_sessions(session, user.id)
    session.flush()
    audit.record(session, "user.password", f"user:{user.id}")


def enroll_totp(session: Session, user: User) -> str:
    """Give the user a new TOTP secret (replacing any); returns the otpauth:// URI.
    From now on logging in needs a code."""
    user.totp_secret = totp.new_secret()
    end_sessions(session, user.id)
    session.flush()
    audit.record(session, "user.totp", f"user:{user.id}", after={"totp": True})
    return totp.provisioning_uri(user.totp_secret, user.email)

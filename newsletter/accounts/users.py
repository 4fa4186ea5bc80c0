"""Staff users: created, listed, disabled, given a new password, role or second factor.

Every change is audited and ends the user's sessions where it should (a disabled
user, a new password or a second factor switched on logs every browser out at once).

A second factor (TOTP) is switched on in two steps, as GitHub does: `start_totp`
stores a *pending* secret for the authenticator app, and only `confirm_totp` with a
current code from that app makes login need it. A mis-scanned QR code therefore locks
nobody out, and a pending secret left behind never affects login. `remove_totp`
switches it off (an admin for a colleague, the CLI for the locked-out case);
`remove_own_totp` does it for oneself, proved by one's password or a current code.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit, totp
from newsletter.accounts.models import StaffSession, User
from newsletter.accounts.passwords import hash_password, verify_password
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
        "totp_pending": user.totp_pending_secret is not None,
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


def _totp_state(user: User) -> dict[str, Any]:
    return {
        "totp": user.totp_secret is not None,
        "totp_pending": user.totp_pending_secret is not None,
    }


def start_totp(session: Session, user: User) -> totp.Setup:
    """Set up a second factor: a new pending secret (replacing any pending one) for
    the user's authenticator app. Login is unchanged until `confirm_totp` accepts a
    code from it; a factor already on keeps working meanwhile."""
    before = _totp_state(user)
    user.totp_pending_secret = totp.new_secret()
    session.flush()
    audit.record(
        session, "user.totp.setup", f"user:{user.id}", before=before, after=_totp_state(user)
    )
    return totp.setup_of(user.totp_pending_secret, user.email)


def pending_totp(user: User) -> totp.Setup | None:
    """The authenticator the user is setting up (to show again until confirmed)."""
    if user.totp_pending_secret is None:
        return None
    return totp.setup_of(user.totp_pending_secret, user.email)


def confirm_totp(session: Session, user: User, code: str) -> None:
    """Switch the pending secret on if `code` is a current code of it: from now on
    logging in needs a code, and every session of the user ends (they were opened
    without one). A wrong code changes nothing and raises `totp.WrongCode`; the
    pending secret stays, so the next code can be tried."""
    pending = user.totp_pending_secret
    if pending is None:
        raise totp.WrongCode("code", "no authenticator is being set up: set one up first")
    if not totp.verify_code(pending, code):
        raise totp.WrongCode(
            "code",
            "not the current code of the authenticator being set up; the second factor "
            "is not switched on (try the next code the app shows, or set up again)",
        )
    before = _totp_state(user)
    user.totp_secret, user.totp_pending_secret = pending, None
    end_sessions(session, user.id)
    session.flush()
    audit.record(session, "user.totp.on", f"user:{user.id}", before=before, after=_totp_state(user))


def remove_totp(session: Session, user: User) -> bool:
    """Switch the second factor off and drop one being set up: logging in needs the
    password only. For an admin whose colleague lost their phone, and the CLI when
    the last admin is locked out. False when there was nothing to remove."""
    before = _totp_state(user)
    if not any(before.values()):
        return False
    user.totp_secret = user.totp_pending_secret = None
    session.flush()
    audit.record(
        session, "user.totp.off", f"user:{user.id}", before=before, after=_totp_state(user)
    )
    return True


def remove_own_totp(session: Session, user: User, proof: str) -> bool:
    """`remove_totp` for oneself, proved by one's password or a current code (an
    open session alone, left on a desk or stolen, is not enough)."""
    active = user.totp_secret
    if not (
        verify_password(user.password_hash, proof)
        or (active is not None and totp.verify_code(active, proof))
    ):
        raise totp.WrongCode("proof", "neither your password nor a current code of your app")
    return remove_totp(session, user)

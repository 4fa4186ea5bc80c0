"""API tokens: `nl_` and 43 random characters (32 bytes), shown once.

The database keeps the SHA-256 of the whole token (a leaked copy of it lets nobody
in) and its first characters as a visible prefix, so people can tell their tokens
apart in listings and in the audit log. A token acts for its owner with at most the
owner's role, narrowed to its scopes; revoked, expired, or owned by a disabled user,
it stops working at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.accounts.models import ApiToken, User
from newsletter.accounts.roles import Role, check_scopes
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError, Remedy

TOKEN_PREFIX = "nl_"
VISIBLE = 11  # "nl_" and 8 characters
_LIFETIME = re.compile(r"^(\d{1,5})([hdw])$")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


@dataclass(frozen=True)
class NewToken:
    token: str  # the secret: shown once, never stored
    row: ApiToken


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parse_lifetime(value: str) -> timedelta:
    """'90d', '12h', '2w' → a duration (at least an hour)."""
    match = _LIFETIME.match(value.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise InvalidInputError(f"expires {value!r}: use a duration such as 90d, 12h or 2w")
    return int(match.group(1)) * _UNIT[match.group(2)]


def describe_token(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "prefix": token.prefix,
        "name": token.name,
        "user": token.user.email,
        "scopes": list(token.scopes),
        "created_at": token.created_at.isoformat() if token.created_at else None,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "revoked": token.revoked_at is not None,
    }


def create_token(
    session: Session,
    user: User,
    scopes: list[str],
    *,
    name: str = "",
    lifetime: timedelta | None = None,
) -> NewToken:
    """A token for `user` with these scopes (each within the user's role)."""
    if user.disabled:
        raise InvalidInputError(f"user {user.email} is disabled")
    checked = check_scopes(scopes, Role(user.role))
    if len(name) > 200:
        raise InvalidInputError("a token name has at most 200 characters")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user.id,
        name=name.strip(),
        prefix=secret[:VISIBLE],
        token_hash=token_hash(secret),
        scopes=checked,
        expires_at=utcnow() + lifetime if lifetime else None,
    )
    session.add(row)
    session.flush()
    session.refresh(row, ["user"])
    audit.record(
        session,
        "token.create",
        f"token:{row.id}",
        after={
            "prefix": row.prefix,
            "user": user.email,
            "scopes": checked,
            "expires_at": row.expires_at,
        },
    )
    return NewToken(secret, row)


def token_user(
    session: Session, secret: str, now: datetime | None = None
) -> tuple[ApiToken, User] | None:
    """The live token and its user for a presented secret, else None."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    now = now or utcnow()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash(secret)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    if row.user.disabled:
        return None
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now  # bounded writes: at most one a minute per token
    return row, row.user


def get_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"no token {token_id}")
    return row


def find_token(session: Session, ref: str) -> ApiToken:
    """A token by id or by its visible prefix (nl_…)."""
    if ref.isdigit():
        return get_token(session, int(ref))
    rows = list(session.scalars(select(ApiToken).where(ApiToken.prefix == ref[:VISIBLE])))
    if len(rows) != 1:
        raise NotFoundError(f"no single token {ref!r}; give its id", remedy=Remedy("list", "token"))
    return rows[0]


def list_tokens(session: Session, user: User | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return list(session.scalars(query))


def revoke_token(session: Session, row: ApiToken) -> ApiToken:
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        audit.record(session, "token.revoke", f"token:{row.id}", detail={"prefix": row.prefix})
    return row

"""Logging in and out: sessions are database rows, so logout and revocation are real.

The browser holds a random id (32 bytes) in a `Secure; HttpOnly; SameSite=Lax`
cookie; the row holds its SHA-256, so a copy of the database logs nobody in. Every
request looks the row up with its user: a disabled user, an ended session or an
expired one stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import audit, totp
from newsletter.accounts.models import StaffSession, User
from newsletter.accounts.passwords import burn_time, verify_password
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.errors import NewsletterError
from newsletter.ratelimit import Limit, RateLimiter

# The session cookie, shared by the staff API and the console (one login for both).
COOKIE = "nl_session"


class LoginFailed(NewsletterError):
    """The same answer for an unknown user, a wrong password and a disabled user."""

    def __init__(self) -> None:
        super().__init__("the email address or the password is wrong")


class SecondFactorRequired(NewsletterError):
    """The password was right but the user enrolled TOTP: a valid code is needed."""

    def __init__(self, given: bool) -> None:
        super().__init__(
            "the one-time code is wrong" if given else "this account needs a one-time code"
        )


@dataclass(frozen=True)
class Login:
    cookie: str  # the value for the session cookie: shown to the browser only
    user: User
    expires_at: datetime


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()


def csrf_token(secret_key: str, cookie: str) -> str:
    """The session's CSRF token: sent back in X-CSRF-Token with every unsafe request
    made with the cookie (a page of another site cannot read it)."""
    key = hashlib.sha256(b"newsletter-staff-csrf:" + secret_key.encode()).digest()
    return hmac.new(key, cookie.encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def login_retry_after(limiter: RateLimiter, settings: Settings, ip: str, email: str) -> int:
    """Count a login attempt per client address and per account; 0 when it may go
    ahead, else the seconds to wait (the attempt was not counted)."""
    for limit, key in (
        (
            Limit("login-ip", settings.login_limit_per_ip, settings.login_limit_per_ip_seconds),
            ip,
        ),
        (
            Limit(
                "login-account",
                settings.login_limit_per_account,
                settings.login_limit_per_account_seconds,
            ),
            email.strip().lower(),
        ),
    ):
        decision = limiter.hit(limit, key)
        if not decision.allowed:
            return max(1, decision.retry_after)
    return 0


def log_in(
    session: Session,
    email: str,
    password: str,
    code: str | None,
    *,
    ip: str,
    user_agent: str,
    lifetime: timedelta,
) -> Login:
    """Check the password (and the TOTP code when enrolled) and open a session."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        burn_time(password)
        raise LoginFailed()
    if not verify_password(user.password_hash, password) or user.disabled:
        raise LoginFailed()
    if user.totp_secret is not None and not (code and totp.verify_code(user.totp_secret, code)):
        raise SecondFactorRequired(given=bool(code))
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    row = StaffSession(
        id_hash=_hash(cookie),
        user_id=user.id,
        ip=ip[:64],
        user_agent=user_agent[:300],
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
    )
    session.add(row)
    session.flush()
    audit.act_as(session, audit.Actor(f"{user.email} (session)", "session", user.id, ip))
    audit.record(session, "session.login", f"user:{user.id}")
    return Login(cookie, user, row.expires_at)


def session_user(session: Session, cookie: str, now: datetime | None = None) -> User | None:
    """The user of a live session (not ended, not expired, user not disabled)."""
    now = now or utcnow()
    row = session.scalar(select(StaffSession).where(StaffSession.id_hash == _hash(cookie)))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if row.user.disabled:
        return None
    if now - row.last_seen_at > timedelta(minutes=1):
        row.last_seen_at = now  # bounded writes: at most one a minute per session
    return row.user


def log_out(session: Session, cookie: str) -> bool:
    row = session.scalar(select(StaffSession).where(StaffSession.id_hash == _hash(cookie)))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    audit.record(session, "session.logout", f"user:{row.user_id}")
    return True

"""Users, their sessions and API tokens, the audit log and stored idempotent replies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, JsonType, UtcDateTime, utcnow


class User(Base):
    """A member of staff. Never deleted (the audit log names them): disabled instead."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    role: Mapped[str] = mapped_column(String(20))  # roles.Role
    # argon2id hash (passwords.py); "" means no password set: cannot log in.
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    # Base32 TOTP secret once enrolled (totp.py); None: no second factor.
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    # A secret being set up: shown to its owner, needed at login only once a code
    # from it has been accepted (then it moves to totp_secret). None: nothing pending.
    totp_pending_secret: Mapped[str | None] = mapped_column(String(64))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Editors and senders may be limited to some lists (their ids); None means all.
    list_ids: Mapped[list[int] | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class StaffSession(Base):
    """A logged-in browser: the cookie holds a random id, the row its SHA-256."""

    __tablename__ = "staff_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    user: Mapped[User] = relationship()


class ApiToken(Base):
    """An API token: shown once, stored as the SHA-256 of the whole token; `prefix`
    (e.g. nl_3fK9aQ2x) is the part people see in listings and logs."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    user: Mapped[User] = relationship()


class AuditEntry(Base):
    """One staff write: who (a user, through a session, a token or the CLI), from
    where, what, on which thing, and for settings, templates and campaigns the state
    before and after. Append-only: the migration adds triggers refusing UPDATE and
    DELETE. Holds no subscriber's address (a hash at most), so forgetting a person
    leaves nothing readable here."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # Plain values, no foreign keys: an entry outlives what it names.
    user_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(400))  # "ann@clinic.example (token nl_3fK9…)"
    via: Mapped[str] = mapped_column(String(20))  # session, token, cli, system
    ip: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(100))  # e.g. campaign.schedule
    target: Mapped[str] = mapped_column(String(400), default="")  # e.g. campaign:12
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)


class IdempotentRequest(Base):
    """A POST made with an Idempotency-Key: claimed before it runs, its response kept
    for 24 hours so a replay returns it; unique per caller and key."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("owner", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))  # "token:12" or "user:3"
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # method, path and body hashed
    status_code: Mapped[int | None] = mapped_column(Integer)  # None while running
    response: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(100), default="")
    location: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)

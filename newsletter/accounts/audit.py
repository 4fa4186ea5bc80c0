"""The audit log: who changed what, from where, and when.

A staff face says who is acting once per unit of work (`act_as(session, actor)`);
the service functions that change something call `record(session, ...)`, so every
face that calls them is audited the same way, and nothing in a face needs to
remember to. A session with no actor (the scheduler, a subscriber's own pages)
records nothing: those are not staff writes.

Entries are only ever added (the database refuses UPDATE and DELETE on the table).
They must not hold a subscriber's address or name: `forget` cannot reach them.
Subscribers are named by id, and by `email_hash` where there is no id.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts.models import AuditEntry, User
from newsletter.db import utcnow

_ACTOR = "newsletter.actor"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user through a session or a token, the CLI, or the system."""

    label: str  # what the log shows: "ann@clinic.example (token nl_3fK9aQ2x)"
    via: str  # "session", "token", "cli" or "system"
    user_id: int | None = None
    ip: str = ""

    @classmethod
    def cli(cls) -> Actor:
        """Someone with a shell on the server (and so the database's keys)."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        return cls(label=f"cli:{who}", via="cli")


def act_as(session: Session, actor: Actor) -> None:
    """Record this session's writes as `actor`'s."""
    session.info[_ACTOR] = actor


def current_actor(session: Session) -> Actor | None:
    actor = session.info.get(_ACTOR)
    return actor if isinstance(actor, Actor) else None


def record(
    session: Session,
    action: str,
    target: str = "",
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an entry for the acting staff member (none when nobody acts); it commits
    with the change it describes, or not at all."""
    actor = current_actor(session)
    if actor is None:
        return
    session.add(
        AuditEntry(
            at=utcnow(),
            user_id=actor.user_id,
            actor=actor.label[:400],
            via=actor.via,
            ip=actor.ip[:64],
            action=action,
            target=target[:400],
            before=_plain(before),
            after=_plain(after),
            detail=_plain(detail) or {},
        )
    )


def _plain(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """JSON-ready: datetimes as ISO text."""
    if data is None:
        return None
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in data.items()
    }


def entries(
    session: Session,
    *,
    since: datetime | None = None,
    user: str | None = None,
    after_id: int = 0,
    limit: int = 100,
    newest_first: bool = False,
    until: datetime | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    """Entries in id order (or newest first), from `since` and before `until`, by one
    user (email), of one action or family of actions ("campaign" or "campaign.")."""
    query = select(AuditEntry)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if action:
        action = action.strip()
        family = action if action.endswith(".") else action + "."
        query = query.where((AuditEntry.action == action) | AuditEntry.action.startswith(family))
    if user is not None:
        user_id = session.scalar(select(User.id).where(User.email == user.strip().lower()))
        query = query.where(AuditEntry.user_id == (user_id if user_id is not None else -1))
    if newest_first:
        if after_id:
            query = query.where(AuditEntry.id < after_id)
        query = query.order_by(AuditEntry.id.desc())
    else:
        query = query.where(AuditEntry.id > after_id).order_by(AuditEntry.id)
    return list(session.scalars(query.limit(limit)))


def describe_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "user_id": entry.user_id,
        "via": entry.via,
        "ip": entry.ip,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "detail": entry.detail or {},
    }

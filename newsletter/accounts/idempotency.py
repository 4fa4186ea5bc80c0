"""Idempotency keys: a POST sent twice with one key does its work once.

A request with a key first *claims* it (a row unique per caller and key, committed
at once, so a concurrent request with the same key sees it). The work and the
stored response commit together in the request's own transaction, so a key is
either done, with the response to replay, or its work never committed; a claim
left behind by a crashed process is taken over after `ABANDONED`. A failed request
(any error) gives its key back, so the caller can fix the request and retry.

| the key is                       | answer                                   |
|----------------------------------|------------------------------------------|
| new                              | the work runs                            |
| done, same method, path and body | the first response, replayed             |
| done, another body               | 422: the key belongs to another request  |
| being worked on                  | 409: retry later                         |
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.accounts.models import IdempotentRequest
from newsletter.db import utcnow

KEPT = timedelta(hours=24)
ABANDONED = timedelta(minutes=10)
MAX_KEY = 255


class Outcome(enum.Enum):
    claimed = "claimed"
    replay = "replay"
    mismatch = "mismatch"
    in_progress = "in_progress"


@dataclass(frozen=True)
class Claim:
    outcome: Outcome
    record_id: int = 0
    status_code: int = 0
    response: str = ""
    content_type: str = ""
    location: str = ""


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def claim(
    sessions: sessionmaker[Session], owner: str, key: str, print_: str, now: datetime | None = None
) -> Claim:
    """Claim `key` for `owner`, or say why not (see the module's table)."""
    now = now or utcnow()
    with sessions() as session:
        session.execute(
            delete(IdempotentRequest).where(
                IdempotentRequest.owner == owner,
                IdempotentRequest.key == key,
                IdempotentRequest.expires_at <= now,
            )
        )
        # A claim whose work never committed (the process died) is free again.
        session.execute(
            delete(IdempotentRequest).where(
                IdempotentRequest.owner == owner,
                IdempotentRequest.key == key,
                IdempotentRequest.status_code.is_(None),
                IdempotentRequest.created_at <= now - ABANDONED,
            )
        )
        row = IdempotentRequest(
            owner=owner, key=key, fingerprint=print_, created_at=now, expires_at=now + KEPT
        )
        session.add(row)
        try:
            session.commit()
            return Claim(Outcome.claimed, row.id)
        except IntegrityError:
            session.rollback()
        found = session.scalar(
            select(IdempotentRequest).where(
                IdempotentRequest.owner == owner, IdempotentRequest.key == key
            )
        )
    if found is None:  # taken and given back in between: the caller may retry
        return Claim(Outcome.in_progress)
    if found.fingerprint != print_:
        return Claim(Outcome.mismatch)
    if found.status_code is None:
        return Claim(Outcome.in_progress)
    return Claim(
        Outcome.replay,
        found.id,
        found.status_code,
        found.response or "",
        found.content_type,
        found.location,
    )


def complete(
    session: Session,
    record_id: int,
    status_code: int,
    response: str,
    content_type: str,
    location: str = "",
) -> None:
    """Keep the response, in the transaction of the work it answers."""
    row = session.get_one(IdempotentRequest, record_id)
    row.status_code = status_code
    row.response = response
    row.content_type = content_type
    row.location = location[:500]


def release(sessions: sessionmaker[Session], record_id: int) -> None:
    """Give the key back after a failed request."""
    with sessions() as session:
        session.execute(
            delete(IdempotentRequest).where(
                IdempotentRequest.id == record_id, IdempotentRequest.status_code.is_(None)
            )
        )
        session.commit()


def purge_expired(session: Session, now: datetime | None = None) -> int:
    result = session.execute(
        delete(IdempotentRequest).where(IdempotentRequest.expires_at <= (now or utcnow()))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]

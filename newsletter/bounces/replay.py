"""Signature tokens remembered, so a signature cannot vouch for other data.

Mailgun signs only `timestamp + token`, not the event beside them: anyone who saw one
signed webhook could, within the five minutes a timestamp stays fresh, send the same
signature with other event data. So the first event data a token arrives with is
remembered (a digest), and the token with any other data is refused as forged; with
the same data it is a provider's retry, which the event's own id makes harmless.
Tokens older than twice the freshness window can never be accepted again and are
pruned as new ones arrive.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.bounces.models import WebhookSignature
from newsletter.bounces.webhooks import ForgedWebhook, SignedToken

MAX_TOKEN = 200  # WebhookSignature.token


def remember_signature(session: Session, signed: SignedToken, now: datetime) -> None:
    """Record `signed`, or raise ForgedWebhook when its token came with other data
    before. Flushes; the caller commits (with the events the data acts on)."""
    if len(signed.token) > MAX_TOKEN:
        raise ForgedWebhook(f"the {signed.provider} signature token is too long")
    session.execute(
        delete(WebhookSignature).where(
            WebhookSignature.seen_at < now - timedelta(seconds=2 * signed.fresh_seconds)
        )
    )
    seen = _digest_seen(session, signed)
    if seen is None:
        try:
            with session.begin_nested():
                session.add(
                    WebhookSignature(
                        provider=signed.provider,
                        token=signed.token,
                        digest=signed.digest,
                        seen_at=now,
                    )
                )
            return
        except IntegrityError:  # the same token in a request running at this moment
            seen = _digest_seen(session, signed)
    if seen != signed.digest:
        raise ForgedWebhook(f"this {signed.provider} signature was already used for other data")


def _digest_seen(session: Session, signed: SignedToken) -> str | None:
    return session.scalar(
        select(WebhookSignature.digest).where(
            WebhookSignature.provider == signed.provider, WebhookSignature.token == signed.token
        )
    )

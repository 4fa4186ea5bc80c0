"""The outbox: what happened, written in the same transaction as the change itself.

    emit(session, "subscriber.confirmed", {"subscriber_id": 7, "email": "…", "list": "news"})

adds one row per enabled endpoint that asked for the event; nothing else. If the
change rolls back, so does the event; if it commits, a worker delivers it later
(services/webhooks.py), and the scheduler's sweep finds any row whose task was lost
(a Redis flush, a killed worker). Without endpoints an event costs one indexed query
per session (the endpoint list is read once per transaction).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.events.models import WebhookEndpoint, WebhookOutbox

EVENTS = (
    "subscriber.created",
    "subscriber.confirmed",
    "subscriber.unsubscribed",
    "subscriber.bounced",
    "subscriber.complained",
    "subscriber.forgotten",
    "campaign.scheduled",
    "campaign.started",
    "campaign.paused",
    "campaign.finished",
    "campaign.failed",
    "sequence.step_sent",
    "import.finished",
    "run.stalled",
)
# Sent only by "test" (CLI, API, console): every endpoint receives it when asked.
TEST_EVENT = "webhook.test"
_CACHE = "newsletter.webhook_endpoints"


def _subscribers(session: Session) -> list[tuple[int, list[str]]]:
    """The enabled endpoints and their events, read once per transaction (a rolled
    back one may have held an endpoint that no longer exists)."""
    cached = session.info.get(_CACHE)
    # The transaction object itself is kept (not its id, which a later one may reuse).
    if cached is None or cached[0] is not session.get_transaction():
        endpoints = [
            (endpoint_id, list(events or []))
            for endpoint_id, events in session.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.enabled)
            )
        ]
        cached = (session.get_transaction(), endpoints)
        session.info[_CACHE] = cached
    return list(cached[1])


def forget_endpoints(session: Session) -> None:
    """Read the endpoints again at the next event (after they changed in `session`)."""
    session.info.pop(_CACHE, None)


def emit(session: Session, event: str, data: dict[str, Any]) -> int:
    """Queue `event` with `data` (plain JSON) for every enabled endpoint that asked
    for it; returns how many rows were added."""
    assert event in EVENTS, event
    now = utcnow()
    added = 0
    for endpoint_id, events in _subscribers(session):
        if event in events or "*" in events:
            session.add(outbox_row(endpoint_id, event, data, now))
            added += 1
    return added


def outbox_row(endpoint_id: int, event: str, data: dict[str, Any], now: Any) -> WebhookOutbox:
    return WebhookOutbox(
        endpoint_id=endpoint_id,
        event_id=f"evt_{uuid.uuid4().hex}",
        event=event,
        data=data,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )

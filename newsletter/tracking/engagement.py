"""Who engaged: for segments ("opened or clicked in the last N days") and automation.

Only people are counted: machine events (scanners, proxies, prefetches) never make a
reader "engaged". Only individual-mode events name a reader; anonymous and `off`
lists contribute nobody, by design.

    from newsletter.tracking.engagement import engaged_subscribers
    query = select(Subscriber).where(Subscriber.id.in_(engaged_subscribers(since, "click")))

A reader is engaged since T when a human event of theirs happened at or after T (raw
events, kept NEWSLETTER_TRACKING_RETENTION_DAYS) or their first human open / click of
a message was at or after T (the ledger, kept for good): so windows longer than the
retention still find everyone whose first engagement with a message falls inside.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import Select, select, union

from newsletter.runs.models import Delivery
from newsletter.tracking.models import EventKind, TrackingEvent

Engagement = Literal["open", "click", "any"]


def engaged_subscribers(since: datetime, kind: Engagement = "any") -> Select[tuple[int]]:
    """A query of the ids of subscribers with a human open and/or click at or after
    `since` (`kind`: "open", "click" or "any"); use it as a subquery."""
    events = (
        select(Delivery.subscriber_id)
        .join(TrackingEvent, TrackingEvent.delivery_id == Delivery.id)
        .where(TrackingEvent.machine.is_(False), TrackingEvent.occurred_at >= since)
    )
    firsts = []
    if kind in ("open", "any"):
        firsts.append(
            select(Delivery.subscriber_id).where(
                Delivery.first_open_at >= since, Delivery.first_open_machine.is_(False)
            )
        )
    if kind in ("click", "any"):
        firsts.append(
            select(Delivery.subscriber_id).where(
                Delivery.first_click_at >= since, Delivery.first_click_machine.is_(False)
            )
        )
    if kind != "any":
        events = events.where(TrackingEvent.kind == EventKind(kind))
    combined = union(events, *firsts).subquery()
    return select(combined.c.subscriber_id)

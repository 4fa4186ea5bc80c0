"""The ledger: fanning a run out into delivery rows, and recording each result.

Every recipient gets one row per run (unique), inserted in bulk page by page while
scanning the audience by subscriber id (keyset pagination: no OFFSET, never the
whole list in memory). A chunk of work is a subscriber-id range of one run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from newsletter.audience.models import Subscriber, Subscription, SubscriptionStatus, Suppression
from newsletter.campaigns.models import Run, RunStatus, campaign_lists
from newsletter.db import utcnow
from newsletter.delivery.models import Delivery, DeliveryStatus


@dataclass(frozen=True)
class Chunk:
    """Deliveries of one run whose subscriber ids lie in [first, last]."""

    run_id: int
    first: int
    last: int


def audience_page(session: Session, list_ids: Sequence[int], after: int, limit: int) -> list[Any]:
    """Confirmed members of any of the lists with id > after: (id, email, list_id, suppressed)."""
    suppressed = select(Suppression.id).where(Suppression.email == Subscriber.email).exists()
    query = (
        select(
            Subscriber.id,
            Subscriber.email,
            func.min(Subscription.list_id).label("list_id"),
            suppressed.label("suppressed"),
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.confirmed,
            Subscriber.id > after,
        )
        .group_by(Subscriber.id, Subscriber.email)
        .order_by(Subscriber.id)
        .limit(limit)
    )
    return list(session.execute(query).all())


def _insert(session: Session) -> Any:
    return (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )(Delivery)


def add_deliveries(session: Session, run_id: int, page: Sequence[Any]) -> None:
    """Ledger rows for a page of the audience; rows that exist already are left alone."""
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "subscriber_id": r.id,
            "list_id": r.list_id,
            "email": r.email,
            "status": DeliveryStatus.suppressed if r.suppressed else DeliveryStatus.pending,
            "attempts": 0,
            "smtp_reply": "",
            "message_id": "",
            "updated_at": now,
        }
        for r in page
    ]
    if rows:
        session.execute(_insert(session).on_conflict_do_nothing(), rows)


def fan_out(
    sessions: sessionmaker[Session],
    run_id: int,
    chunk_size: int,
    enqueue: Callable[[Chunk], None],
) -> int:
    """Write the run's ledger page by page, enqueueing each page as a chunk after commit.

    Safe to repeat: rows that exist are kept, and sending a chunk twice sends nothing
    new. Ends by moving the run from preparing to sending; returns the recipient count.
    """
    with sessions() as session:
        list_ids = list(
            session.scalars(
                select(campaign_lists.c.list_id)
                .join(Run, Run.campaign_id == campaign_lists.c.campaign_id)
                .where(Run.id == run_id)
            )
        )
    after = 0
    while True:
        with sessions() as session:
            page = audience_page(session, list_ids, after, chunk_size)
            if not page:
                break
            add_deliveries(session, run_id, page)
            session.commit()
        chunk = Chunk(run_id, page[0].id, page[-1].id)
        enqueue(chunk)
        after = chunk.last
    with sessions() as session:
        total = (
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.run_id == run_id)
            )
            or 0
        )
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.preparing)
            .values(status=RunStatus.sending, recipients=total)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    return total


def pending_in_chunk(session: Session, chunk: Chunk) -> list[Any]:
    """Pending deliveries with what sending needs, and whether the subscription still holds.

    `still_subscribed` is false for someone who left the list after the run started:
    the ledger was written at fan-out, but an unsubscribe must stop mail at once.
    """
    query = (
        select(
            Delivery.id,
            Delivery.attempts,
            Delivery.email,
            Delivery.list_id,
            Delivery.subscriber_id,
            Subscriber.name,
            Subscriber.attributes,
            (Subscription.status == SubscriptionStatus.confirmed).label("still_subscribed"),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(
            Subscription,
            (Subscription.subscriber_id == Delivery.subscriber_id)
            & (Subscription.list_id == Delivery.list_id),
        )
        .where(
            Delivery.run_id == chunk.run_id,
            Delivery.status == DeliveryStatus.pending,
            Delivery.subscriber_id.between(chunk.first, chunk.last),
        )
        .order_by(Delivery.subscriber_id)
    )
    return list(session.execute(query).all())


def record_result(
    session: Session,
    delivery_id: int,
    status: DeliveryStatus,
    reply: str,
    message_id: str,
    next_attempt_at: datetime | None = None,
) -> None:
    """Write one delivery's outcome; only a pending row changes (a repeat is a no-op)."""
    now = utcnow()
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.pending)
        .values(
            status=status,
            attempts=Delivery.attempts + 1,
            smtp_reply=reply[:1000],
            message_id=message_id,
            sent_at=now if status is DeliveryStatus.sent else None,
            next_attempt_at=next_attempt_at,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def retry_delay(attempts: int, base: timedelta = timedelta(minutes=1)) -> timedelta:
    """Exponential backoff: 1, 2, 4 … minutes, at most 2 hours."""
    delay: timedelta = base * (2 ** max(attempts - 1, 0))
    return min(delay, timedelta(hours=2))


def release_due_retries(session: Session, now: datetime) -> list[Chunk]:
    """Deferred deliveries whose time has come go back to pending; returns their chunks."""
    rows = session.execute(
        select(Delivery.run_id, func.min(Delivery.subscriber_id), func.max(Delivery.subscriber_id))
        .join(Run, Run.id == Delivery.run_id)
        .where(
            Delivery.status == DeliveryStatus.deferred,
            Delivery.next_attempt_at <= now,
            Run.status == RunStatus.sending,
        )
        .group_by(Delivery.run_id)
    ).all()
    chunks = []
    for run_id, first, last in rows:
        session.execute(
            update(Delivery)
            .where(
                Delivery.run_id == run_id,
                Delivery.status == DeliveryStatus.deferred,
                Delivery.next_attempt_at <= now,
            )
            .values(status=DeliveryStatus.pending, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        chunks.append(Chunk(run_id, first, last))
    return chunks

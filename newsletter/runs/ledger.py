"""The ledger: the one writer of delivery rows; claiming them, releasing them, retries.

Every recipient gets one row per run (unique): a campaign run's rows are inserted by
the database page by page while scanning the audience by subscriber id (keyset
pagination: no OFFSET, never the whole list in memory, see `fan_out`); a drip step's
row is added when its reader is due (`add_step_delivery`). A chunk of work is a
subscriber-id range of one run. Results reach the ledger through the sending
process's journal (delivery/journal.py).

Nothing here changes a run's status: that is `lifecycle.py`'s. This module knows
lists and subscribers, never campaigns or sequences: callers pass the list ids, an
optional filter over subscribers (a compiled segment, `AudienceFilter`) and, for
local-time sends, the rule that says when each row is due.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, exists, func, literal, select, true, update
from sqlalchemy.orm import Session

from newsletter.audience.models import Subscriber, Subscription, SubscriptionStatus, Suppression
from newsletter.db import UtcDateTime, upsert_insert, utcnow
from newsletter.errors import NewsletterError
from newsletter.runs.models import (
    OPEN_DELIVERY_STATUSES,
    Delivery,
    DeliveryStatus,
    Run,
    RunStatus,
)

# A condition over `Subscriber` (a compiled segment) that narrows a run's audience.
AudienceFilter = ColumnElement[bool]

# Compiles a saved segment (by id) to an AudienceFilter. It lives above the layers
# that fan out (services/segments.py: it knows engagement), so their callers pass it in.
SegmentFilter = Callable[[Session, int], AudienceFilter]


class SegmentCompilerMissing(NewsletterError):
    """A campaign or sequence with a segment was fanned out without a way to compile
    it: refused, rather than mailing everyone on its lists."""


@dataclass(frozen=True)
class Chunk:
    """Deliveries of one run whose subscriber ids lie in [first, last]."""

    run_id: int
    first: int
    last: int


def delivery_counts(session: Session, run_id: int) -> dict[DeliveryStatus, int]:
    """How many of the run's ledger rows are in each status (absent statuses: none)."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.run_id == run_id)
        .group_by(Delivery.status)
    ).all()
    return {status: count for status, count in rows}


def _audience(list_ids: Sequence[int]) -> Any:
    """Confirmed subscriptions to any of the lists."""
    return (Subscription.list_id.in_(list_ids)) & (
        Subscription.status == SubscriptionStatus.confirmed
    )


def _page(first: int, last: int) -> Any:
    """Subscribers first..last, on the subscriptions' side of the join: the range is
    then part of the (list, status, subscriber) index scan. Said of subscribers.id,
    the database read every confirmed subscription of the lists for each page (every
    page: quadratic, 1,000,000 readers made 500 scans of 1,000,000 entries)."""
    return Subscription.subscriber_id.between(first, last)


def _narrowed(where: AudienceFilter | None) -> AudienceFilter:
    return true() if where is None else where


def _suppressed() -> Any:
    """Whether the subscriber's address is on the suppression list."""
    return select(Suppression.id).where(Suppression.email == Subscriber.email).exists()


@dataclass(frozen=True)
class AudienceCount:
    """Who a send to some lists reaches now: distinct confirmed members, of whom
    `suppressed` are on the suppression list (their ledger rows say so; no mail)."""

    members: int
    suppressed: int

    @property
    def recipients(self) -> int:
        return self.members - self.suppressed


def audience_count(
    session: Session, list_ids: Sequence[int], where: AudienceFilter | None = None
) -> AudienceCount:
    """The exact audience a run started now would have (one row per person, however
    many of the lists they are on), narrowed by `where` if given."""
    if not list_ids:
        return AudienceCount(0, 0)
    people = (
        select(Subscriber.id, _suppressed().label("suppressed"))
        .where(
            Subscriber.id.in_(select(Subscription.subscriber_id).where(_audience(list_ids))),
            _narrowed(where),
        )
        .subquery()
    )
    members, suppressed = session.execute(
        select(
            func.count(), func.coalesce(func.sum(case((people.c.suppressed, 1), else_=0)), 0)
        ).select_from(people)
    ).one()
    return AudienceCount(int(members), int(suppressed))


def page_bounds(
    session: Session,
    list_ids: Sequence[int],
    after: int,
    limit: int,
    where: AudienceFilter | None = None,
) -> tuple[int, int] | None:
    """The first and last subscriber id of the next page of the audience after `after`
    (at most `limit` people, narrowed by `where`), or None when nobody is left."""
    ids = (
        select(Subscription.subscriber_id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(_audience(list_ids), Subscription.subscriber_id > after, _narrowed(where))
        .distinct()
        .order_by(Subscription.subscriber_id)
        .limit(limit)
        .subquery()
    )
    first, last = session.execute(
        select(func.min(ids.c.subscriber_id), func.max(ids.c.subscriber_id))
    ).one()
    return None if first is None else (first, last)


def audience_page(
    session: Session,
    list_ids: Sequence[int],
    first: int,
    last: int,
    where: AudienceFilter | None = None,
) -> list[Any]:
    """Confirmed members of any of the lists with first <= id <= last, narrowed by
    `where`: (id, email, timezone, list_id, suppressed)."""
    suppressed = _suppressed()
    query = (
        select(
            Subscriber.id,
            Subscriber.email,
            Subscriber.timezone,
            func.min(Subscription.list_id).label("list_id"),
            suppressed.label("suppressed"),
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(_audience(list_ids), _page(first, last), _narrowed(where))
        .group_by(Subscriber.id, Subscriber.email, Subscriber.timezone)
        .order_by(Subscriber.id)
    )
    return list(session.execute(query).all())


_LEDGER_COLUMNS = (
    "run_id",
    "subscriber_id",
    "list_id",
    "email",
    "status",
    "attempts",
    "smtp_reply",
    "message_id",
    "updated_at",
)


def insert_page(
    session: Session,
    run_id: int,
    list_ids: Sequence[int],
    first: int,
    last: int,
    where: AudienceFilter | None = None,
) -> None:
    """Ledger rows for the audience with first <= id <= last (narrowed by `where`),
    written by the database itself (INSERT … SELECT: no row travels to us); existing
    rows are left alone."""
    session.execute(
        upsert_insert(session, Delivery)
        .from_select(_LEDGER_COLUMNS, ledger_page(run_id, list_ids, first, last, where))
        .on_conflict_do_nothing()
    )


def ledger_page(
    run_id: int,
    list_ids: Sequence[int],
    first: int,
    last: int,
    where: AudienceFilter | None = None,
) -> Select[Any]:
    """The ledger rows `insert_page` writes, as a query."""
    suppressed = _suppressed()
    status = case(
        (suppressed, literal(DeliveryStatus.suppressed.value)),
        else_=literal(DeliveryStatus.pending.value),
    )
    return (
        select(
            literal(run_id),
            Subscriber.id,
            func.min(Subscription.list_id),
            Subscriber.email,
            status,
            literal(0),
            literal(""),
            literal(""),
            literal(utcnow(), UtcDateTime()),
        )
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .where(_audience(list_ids), _page(first, last), _narrowed(where))
        .group_by(Subscriber.id, Subscriber.email)
    )


def add_deliveries(
    session: Session,
    run_id: int,
    page: Sequence[Any],
    deliver_at: Callable[[Any], datetime],
) -> None:
    """Ledger rows for a page of the audience, each due at its own local time: a row
    due later waits as deferred until then (the retry release then hands it to a
    chunk like any other deferred row). Rows that exist already are left alone."""
    now = utcnow()
    rows = []
    for r in page:
        status, later = DeliveryStatus.pending, None
        if r.suppressed:
            status = DeliveryStatus.suppressed
        elif (at := deliver_at(r)) > now:
            status, later = DeliveryStatus.deferred, at
        rows.append(
            {
                "run_id": run_id,
                "subscriber_id": r.id,
                "list_id": r.list_id,
                "email": r.email,
                "status": status,
                "next_attempt_at": later,
                "attempts": 0,
                "smtp_reply": "",
                "message_id": "",
                "updated_at": now,
            }
        )
    if rows:
        session.execute(upsert_insert(session, Delivery).on_conflict_do_nothing(), rows)


def add_step_delivery(
    session: Session,
    run_id: int,
    subscriber_id: int,
    list_id: int,
    email: str,
    suppressed: bool,
    now: datetime,
) -> None:
    """The ledger row of one reader of a drip step (pending, or suppressed); a row that
    exists already is left alone, so a step never reaches a reader twice."""
    session.execute(
        upsert_insert(session, Delivery)
        .values(
            run_id=run_id,
            subscriber_id=subscriber_id,
            list_id=list_id,
            email=email,
            status=DeliveryStatus.suppressed if suppressed else DeliveryStatus.pending,
            attempts=0,
            claim="",
            smtp_reply="",
            message_id="",
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )


def count_rows(session: Session, run_id: int) -> int:
    """How many ledger rows (recipients) the run has."""
    count = select(func.count()).select_from(Delivery).where(Delivery.run_id == run_id)
    return session.scalar(count) or 0


def has_open_rows(session: Session, run_id: int) -> bool:
    """Whether some row of the run still needs a send (pending, sending or deferred)."""
    open_work = exists().where(
        Delivery.run_id == run_id, Delivery.status.in_(OPEN_DELIVERY_STATUSES)
    )
    return bool(session.scalar(select(open_work)))


def cancel_unsent(session: Session, run_id: int, now: datetime) -> None:
    """Rows of a cancelled run that were waiting (pending or deferred) will never go."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.run_id == run_id,
            Delivery.status.in_((DeliveryStatus.pending, DeliveryStatus.deferred)),
        )
        .values(status=DeliveryStatus.cancelled, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def claim_chunk(session: Session, chunk: Chunk, claim: str, now: datetime, lease: timedelta) -> int:
    """Claim the chunk's sendable rows for `claim`; returns how many it holds.

    Sendable: pending rows; rows this same claim held before (the task was redelivered
    after its worker died); rows whose claim expired (their task died). A row claimed
    by a live task is left alone, so two tasks for one chunk never send one message.
    """
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.run_id == chunk.run_id,
            Delivery.subscriber_id.between(chunk.first, chunk.last),
            (Delivery.status == DeliveryStatus.pending)
            | (
                (Delivery.status == DeliveryStatus.sending)
                & ((Delivery.claim == claim) | (Delivery.lease_until < now))
            ),
        )
        .values(status=DeliveryStatus.sending, claim=claim, lease_until=now + lease)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def claimed_rows(
    session: Session, chunk: Chunk, claim: str, with_attributes: bool = True
) -> list[Any]:
    """The rows `claim` holds, with what sending needs, in subscriber order.

    `still_subscribed` is false for someone who left the list after the run started:
    the ledger was written at fan-out, but an unsubscribe must stop mail at once.
    Attributes (JSON, parsed per row) are read only `with_attributes`; else None.
    """
    query = (
        select(
            Delivery.id,
            Delivery.attempts,
            Delivery.email,
            Delivery.list_id,
            Delivery.subscriber_id,
            Subscriber.name,
            Subscriber.no_tracking,
            Subscriber.attributes if with_attributes else literal(None).label("attributes"),
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
            Delivery.subscriber_id.between(chunk.first, chunk.last),
            Delivery.status == DeliveryStatus.sending,
            Delivery.claim == claim,
        )
        .order_by(Delivery.subscriber_id)
    )
    # Core execution: plain rows, without the ORM's per-row bookkeeping.
    return list(session.connection().execute(query).all())


def _held_by(chunk: Chunk, claim: str) -> Any:
    """The chunk's rows that `claim` holds."""
    return (
        update(Delivery)
        .where(
            Delivery.run_id == chunk.run_id,
            Delivery.subscriber_id.between(chunk.first, chunk.last),
            Delivery.status == DeliveryStatus.sending,
            Delivery.claim == claim,
        )
        .execution_options(synchronize_session=False)
    )


def mark_progress(session: Session, run_id: int) -> None:
    """Note that the run moved on (see lifecycle.recover_stalled): it is not stalled."""
    session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(last_progress_at=utcnow(), stalled_at=None)
        .execution_options(synchronize_session=False)
    )


def renew_claim(session: Session, chunk: Chunk, claim: str, until: datetime) -> None:
    session.execute(_held_by(chunk, claim).values(lease_until=until))
    mark_progress(session, chunk.run_id)


def release_claim(session: Session, chunk: Chunk, claim: str, status: DeliveryStatus) -> None:
    """Give the rows `claim` still holds back (pending on pause, cancelled on cancel)."""
    session.execute(
        _held_by(chunk, claim).values(
            status=status, claim="", lease_until=None, updated_at=utcnow()
        )
    )


def retry_delay(attempts: int, base: float = 60.0, ceiling: float = 7200.0) -> timedelta:
    """Exponential backoff: base, 2×base, 4×base … seconds, at most `ceiling`."""
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), ceiling))


def open_chunks(session: Session, run_id: int, chunk_size: int, now: datetime) -> list[Chunk]:
    """Chunks covering every row of the run that still needs a task.

    Pending rows and rows whose claim expired, paged by subscriber id. Used to rebuild
    the queue from the ledger after a broker flush, a worker crash or a resume.
    """
    needs_task = (Delivery.status == DeliveryStatus.pending) | (
        (Delivery.status == DeliveryStatus.sending) & (Delivery.lease_until < now)
    )
    chunks: list[Chunk] = []
    after = 0
    while True:
        ids = session.scalars(
            select(Delivery.subscriber_id)
            .where(Delivery.run_id == run_id, Delivery.subscriber_id > after, needs_task)
            .order_by(Delivery.subscriber_id)
            .limit(chunk_size)
        ).all()
        if not ids:
            return chunks
        chunks.append(Chunk(run_id, ids[0], ids[-1]))
        after = ids[-1]


def release_due_retries(
    session: Session, now: datetime, lifetime: timedelta, chunk_size: int
) -> list[Chunk]:
    """Deferred deliveries whose time has come go back to pending; returns their chunks.

    A delivery tried and still deferred `lifetime` after its run's occurrence is given
    up: failed. (Rows waiting for a subscriber's local time have not been tried yet.)
    """
    expired_runs = select(Run.id).where(
        Run.status == RunStatus.sending, Run.occurrence_at < now - lifetime
    )
    session.execute(
        update(Delivery)
        .where(
            Delivery.status == DeliveryStatus.deferred,
            Delivery.attempts > 0,
            Delivery.run_id.in_(expired_runs),
        )
        .values(
            status=DeliveryStatus.failed,
            smtp_reply=func.substr("gave up retrying: " + Delivery.smtp_reply, 1, 1000),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    run_ids = session.scalars(
        select(Delivery.run_id)
        .join(Run, Run.id == Delivery.run_id)
        .where(
            Delivery.status == DeliveryStatus.deferred,
            Delivery.next_attempt_at <= now,
            Run.status == RunStatus.sending,
        )
        .distinct()
    ).all()
    chunks = []
    for run_id in run_ids:
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
        chunks.extend(open_chunks(session, run_id, chunk_size, now))
    return chunks


def hand_back(
    session: Session, run_id: int, status: DeliveryStatus, now: datetime
) -> tuple[int, int]:
    """Rows of the run in `status` (failed or deferred) go back to the ledger's queue:
    failed rows become pending, deferred ones are due now. A row whose address has
    been suppressed since (a hard bounce, a complaint) stays as it is. Rows in any
    other status, `sent` above all, are never touched. Returns (handed back, kept
    because suppressed)."""
    if status not in (DeliveryStatus.failed, DeliveryStatus.deferred):
        raise ValueError(f"only failed or deferred rows are handed back, not {status}")
    suppressed = select(Suppression.id).where(Suppression.email == Delivery.email).exists()
    chosen = (Delivery.run_id == run_id) & (Delivery.status == status)
    kept = session.scalar(select(func.count()).select_from(Delivery).where(chosen, suppressed))
    values: dict[str, Any] = {"updated_at": now, "next_attempt_at": None}
    if status is DeliveryStatus.failed:
        values["status"] = DeliveryStatus.pending
    else:
        values["next_attempt_at"] = now
    handed = session.execute(
        update(Delivery)
        .where(chosen, ~suppressed)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(handed.rowcount), int(kept or 0)  # type: ignore[attr-defined]

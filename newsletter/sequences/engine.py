"""The scheduler's work for drip sequences: enrol, stop, wake, and send due steps.

Each step of a sequence (sequence, article) is a Run: rendered once, with one ledger
row per subscriber, unique, so a step is never sent twice to one subscriber even when
two schedulers tick at once. An enrollment moves on by a conditional update of its
own position (the claim), in the same transaction as its ledger row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, select, true, update
from sqlalchemy.orm import Session

from newsletter.audience.models import Subscriber, Subscription, SubscriptionStatus, Suppression
from newsletter.content.series import published_in_order
from newsletter.db import upsert_insert
from newsletter.recurrence import next_occurrence
from newsletter.runs import lifecycle
from newsletter.runs.ledger import (
    Chunk,
    SegmentCompilerMissing,
    SegmentFilter,
    add_step_delivery,
    open_chunks,
)
from newsletter.sequences.models import Enrollment, EnrollmentStatus, Sequence, SequenceStatus

BATCH = 1000


@dataclass
class SequenceReport:
    steps_sent: int = 0
    chunks: list[Chunk] = field(default_factory=list)


def _confirmed(sequence: Sequence) -> object:
    return select(Subscription.subscriber_id).where(
        Subscription.list_id == sequence.list_id,
        Subscription.status == SubscriptionStatus.confirmed,
    )


def sync_enrollments(
    session: Session,
    sequence: Sequence,
    now: datetime,
    segment_filter: SegmentFilter | None = None,
) -> None:
    """Enrol new confirmed members (only those matching the sequence's segment, as it
    reads now), stop those who left, take back those who rejoined."""
    due = now + timedelta(seconds=sequence.initial_delay_seconds)
    already = exists().where(
        Enrollment.sequence_id == sequence.id,
        Enrollment.subscriber_id == Subscription.subscriber_id,
    )
    matching: ColumnElement[bool] = true()
    if sequence.segment_id is not None:
        if segment_filter is None:
            raise SegmentCompilerMissing(
                f"sequence {sequence.id} has a segment but no segment compiler was given"
            )
        matching = segment_filter(session, sequence.segment_id)
    newcomers = session.scalars(
        select(Subscription.subscriber_id)
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .where(
            Subscription.list_id == sequence.list_id,
            Subscription.status == SubscriptionStatus.confirmed,
            ~already,
            matching,
        )
    ).all()
    if newcomers:
        session.execute(
            upsert_insert(session, Enrollment).on_conflict_do_nothing(),
            [
                {
                    "sequence_id": sequence.id,
                    "subscriber_id": subscriber_id,
                    "sent_count": 0,
                    "next_due_at": due,
                    "status": EnrollmentStatus.active,
                    "created_at": now,
                    "updated_at": now,
                }
                for subscriber_id in newcomers
            ],
        )
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.sequence_id == sequence.id,
            Enrollment.status != EnrollmentStatus.stopped,
            Enrollment.subscriber_id.not_in(_confirmed(sequence)),  # type: ignore[arg-type]
        )
        .values(status=EnrollmentStatus.stopped, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    rejoined = {"status": EnrollmentStatus.active, "next_due_at": now, "updated_at": now}
    if sequence.restart_on_rejoin:
        rejoined["sent_count"] = 0
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.sequence_id == sequence.id,
            Enrollment.status == EnrollmentStatus.stopped,
            Enrollment.subscriber_id.in_(_confirmed(sequence)),  # type: ignore[arg-type]
        )
        .values(**rejoined)
        .execution_options(synchronize_session=False)
    )


def wake_caught_up(session: Session, sequence: Sequence, published: int, now: datetime) -> None:
    """Subscribers who had every article get the next one as soon as it is published."""
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.sequence_id == sequence.id,
            Enrollment.status == EnrollmentStatus.caught_up,
            Enrollment.sent_count < published,
        )
        .values(status=EnrollmentStatus.active, next_due_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def next_due(sequence: Sequence, subscriber_timezone: str | None, now: datetime) -> datetime:
    if sequence.every_seconds:
        return now + timedelta(seconds=sequence.every_seconds)
    assert sequence.cron
    return next_occurrence(sequence.cron, subscriber_timezone or sequence.timezone, now)


def send_due_steps(
    session: Session, sequence: Sequence, now: datetime, chunk_size: int
) -> SequenceReport:
    """Give every due enrollment its next article (a ledger row) and move it on."""
    report = SequenceReport()
    articles = published_in_order(session, sequence.series_id, now=now)
    wake_caught_up(session, sequence, len(articles), now)
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.subscriber_id,
            Enrollment.sent_count,
            Subscriber.email,
            Subscriber.timezone,
            exists().where(Suppression.email == Subscriber.email).label("suppressed"),
        )
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(
            Enrollment.sequence_id == sequence.id,
            Enrollment.status == EnrollmentStatus.active,
            Enrollment.next_due_at <= now,
        )
        .order_by(Enrollment.next_due_at, Enrollment.id)
        .limit(BATCH)
    ).all()
    touched: set[int] = set()
    for enrollment_id, subscriber_id, sent, email, tz, suppressed in rows:
        position = and_(
            Enrollment.id == enrollment_id,
            Enrollment.sent_count == sent,
            Enrollment.status == EnrollmentStatus.active,
        )
        if sent >= len(articles):
            session.execute(
                update(Enrollment)
                .where(position)
                .values(status=EnrollmentStatus.caught_up, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            continue
        moved = session.execute(
            update(Enrollment)
            .where(position)
            .values(sent_count=sent + 1, next_due_at=next_due(sequence, tz, now), updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another scheduler moved it on first
        run_id = lifecycle.open_step_run(session, sequence.id, articles[sent].id, now)
        add_step_delivery(session, run_id, subscriber_id, sequence.list_id, email, suppressed, now)
        touched.add(run_id)
        report.steps_sent += 1
    for run_id in sorted(touched):
        # A step run that had finished opens again for its new recipients.
        lifecycle.reopen_step(session, run_id, now)
        report.chunks.extend(open_chunks(session, run_id, chunk_size, now))
    return report


def run_sequences(
    session: Session,
    now: datetime,
    chunk_size: int,
    segment_filter: SegmentFilter | None = None,
) -> SequenceReport:
    """One scheduler pass over every active sequence (`segment_filter` compiles the
    segments some sequences enrol by)."""
    total = SequenceReport()
    sequences = session.scalars(
        select(Sequence).where(Sequence.status == SequenceStatus.active).order_by(Sequence.id)
    ).all()
    for sequence in sequences:
        sync_enrollments(session, sequence, now, segment_filter)
        report = send_due_steps(session, sequence, now, chunk_size)
        total.steps_sent += report.steps_sent
        total.chunks.extend(report.chunks)
    return total


def send_next_now(session: Session, subscriber_id: int, sequence_id: int, now: datetime) -> bool:
    """The subscriber asked for the next article now; False if they have them all."""
    result = session.execute(
        update(Enrollment)
        .where(
            Enrollment.sequence_id == sequence_id,
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.status == EnrollmentStatus.active,
        )
        .values(next_due_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]

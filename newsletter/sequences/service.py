"""Creating and describing drip sequences."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.lists import get_list, require_postal_address
from newsletter.audience.models import Segment
from newsletter.audience.segments import segment_id_for
from newsletter.content.series import get_series
from newsletter.errors import InvalidInputError, NotFoundError, Remedy
from newsletter.recurrence import check_cron, zone
from newsletter.sequences.models import Enrollment, Sequence, SequenceStatus

_PERIOD = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_period(value: str, field: str = "every") -> int:
    """'7d', '12h', '1w', '90m', '30s' (or combinations like '1d12h') → seconds; an
    InvalidInputError names the sequence's `field` ("every" or "delay")."""
    text = value.strip().lower()
    parts = _PERIOD.findall(text)
    if not parts or _PERIOD.sub("", text).strip():
        raise InvalidInputError(
            f"{field} {value!r}: use a period such as 7d, 12h, 1w or 90m",
            remedy=Remedy("give", "sequence", field=field),
        )
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)


def create_sequence(
    session: Session,
    *,
    series_slug: str,
    list_slug: str,
    every: str | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
    initial_delay: str | None = None,
    restart_on_rejoin: bool = False,
    postal_address: str | None = None,
    segment: str | None = None,
) -> Sequence:
    """A sequence sending `series` to the members of `list`, one article per period.

    `postal_address` is NEWSLETTER_POSTAL_ADDRESS; when given ("" for unset), a list
    without an address of its own is refused (each step is refused when sent anyway).
    """
    if (every is None) == (cron is None):
        raise InvalidInputError(
            "give exactly one of every (a period) or cron (an expression)",
            remedy=Remedy("choose", "sequence timing"),
        )
    every_seconds = parse_period(every) if every else None
    if every_seconds is not None and every_seconds < 60:
        raise InvalidInputError("every: must be at least one minute")
    zone(timezone)
    series = get_series(session, series_slug)
    mailing_list = get_list(session, list_slug)
    if postal_address is not None:
        require_postal_address([mailing_list], postal_address)
    exists = session.scalar(
        select(Sequence.id).where(
            Sequence.series_id == series.id, Sequence.list_id == mailing_list.id
        )
    )
    if exists:
        raise InvalidInputError(f"sequence {exists} already sends {series_slug} to {list_slug}")
    sequence = Sequence(
        series_id=series.id,
        list_id=mailing_list.id,
        every_seconds=every_seconds,
        cron=check_cron(cron) if cron else None,
        timezone=timezone,
        initial_delay_seconds=parse_period(initial_delay, "delay") if initial_delay else 0,
        restart_on_rejoin=restart_on_rejoin,
        segment_id=segment_id_for(session, segment),
    )
    session.add(sequence)
    session.flush()
    audit.record(
        session,
        "sequence.create",
        f"sequence:{sequence.id}",
        after={
            "series": series_slug,
            "list": list_slug,
            "every_seconds": every_seconds,
            "cron": sequence.cron,
            "timezone": timezone,
            "segment": segment or None,
        },
    )
    return sequence


def list_sequences(session: Session) -> list[Sequence]:
    return list(session.scalars(select(Sequence).order_by(Sequence.id)))


def get_sequence(session: Session, sequence_id: int) -> Sequence:
    sequence = session.get(Sequence, sequence_id)
    if sequence is None:
        raise NotFoundError(f"no sequence {sequence_id}")
    return sequence


def describe_sequence(session: Session, sequence: Sequence) -> dict[str, Any]:
    counts = dict(
        session.execute(
            select(Enrollment.status, func.count())
            .where(Enrollment.sequence_id == sequence.id)
            .group_by(Enrollment.status)
        ).all()
    )
    return {
        "id": sequence.id,
        "series": sequence.series.slug,
        "list": sequence.mailing_list.slug,
        "every_seconds": sequence.every_seconds,
        "cron": sequence.cron,
        "timezone": sequence.timezone,
        "initial_delay_seconds": sequence.initial_delay_seconds,
        "segment": session.scalar(select(Segment.slug).where(Segment.id == sequence.segment_id))
        if sequence.segment_id is not None
        else None,
        "status": sequence.status.value,
        "enrollments": {status.value: n for status, n in counts.items()},
    }


def set_paused(session: Session, sequence_id: int, paused: bool) -> Sequence:
    """Pause a sequence (no step goes to anyone) or resume it: readers whose step fell
    due meanwhile get it at the next tick, one step each, then their cadence goes on."""
    sequence = get_sequence(session, sequence_id)
    wanted = SequenceStatus.paused if paused else SequenceStatus.active
    if sequence.status is not wanted:
        before = sequence.status.value
        sequence.status = wanted
        session.flush()
        audit.record(
            session,
            "sequence.pause" if paused else "sequence.resume",
            f"sequence:{sequence.id}",
            before={"status": before},
            after={"status": wanted.value},
        )
    return sequence


def members_by_position(session: Session, sequence: Sequence) -> list[tuple[int, str, int]]:
    """(articles sent so far, enrollment status, readers) for the sequence: where its
    readers are in the series."""
    rows = session.execute(
        select(Enrollment.sent_count, Enrollment.status, func.count())
        .where(Enrollment.sequence_id == sequence.id)
        .group_by(Enrollment.sent_count, Enrollment.status)
        .order_by(Enrollment.sent_count, Enrollment.status)
    ).all()
    return [(sent, status.value, count) for sent, status, count in rows]

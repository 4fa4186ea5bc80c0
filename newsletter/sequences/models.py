"""Drip sequences: a series delivered to a list's subscribers one article at a time."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.audience.models import MailingList
from newsletter.content.models import Series
from newsletter.db import Base, UtcDateTime, utcnow


class SequenceStatus(enum.StrEnum):
    active = "active"
    paused = "paused"


class EnrollmentStatus(enum.StrEnum):
    active = "active"  # waiting for next_due_at
    caught_up = "caught_up"  # has every published article; waits for a new one
    paused = "paused"  # paused by the subscriber
    stopped = "stopped"  # left the list


class Sequence(Base):
    __tablename__ = "sequences"
    __table_args__ = (UniqueConstraint("series_id", "list_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    # Exactly one of: a fixed period, or a cron expression read in the subscriber's
    # time zone (falling back to `timezone`).
    every_seconds: Mapped[int | None] = mapped_column(Integer)
    cron: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    initial_delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    restart_on_rejoin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Only the list's members matching this segment are enrolled (read at enrolment).
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"), index=True)
    status: Mapped[SequenceStatus] = mapped_column(
        Enum(SequenceStatus, native_enum=False, length=20), default=SequenceStatus.active
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    series: Mapped[Series] = relationship()
    mailing_list: Mapped[MailingList] = relationship()


class Enrollment(Base):
    """One subscriber's place in a sequence."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("sequence_id", "subscriber_id"),
        Index("ix_enrollments_due", "status", "next_due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    # How many articles of the series this subscriber has been sent so far.
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    next_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status: Mapped[EnrollmentStatus] = mapped_column(
        Enum(EnrollmentStatus, native_enum=False, length=20), default=EnrollmentStatus.active
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    sequence: Mapped[Sequence] = relationship()

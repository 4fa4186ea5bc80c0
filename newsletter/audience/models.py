"""Subscribers, mailing lists, subscriptions and suppressions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, JsonType, UtcDateTime, utcnow


class OptIn(enum.StrEnum):
    single = "single"
    double = "double"


class ArchiveVisibility(enum.StrEnum):
    public = "public"  # listed in the web archive
    private = "private"  # shown only at the unguessable link in its own emails


class TrackingMode(enum.StrEnum):
    """How a list's (or a campaign's) emails count opens and clicks (tracking/)."""

    off = "off"  # links go straight to their destination, no pixel
    anonymous = "anonymous"  # counts only: no event can be tied to a person (default)
    individual = "individual"  # per-recipient events, for lists whose readers agreed

    @property
    def rank(self) -> int:
        """Privacy order: off < anonymous < individual."""
        return ("off", "anonymous", "individual").index(self.value)


class SubscriptionStatus(enum.StrEnum):
    unconfirmed = "unconfirmed"
    confirmed = "confirmed"
    unsubscribed = "unsubscribed"


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        # One row per mailbox, whatever the spelling (audience/addresses.py).
        Index("uq_subscribers_email_canonical", func.lower(text("email")), unique=True),
        # SQLite: ids are never reused, so a forgotten person's links stay dead.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Canonical (audience.addresses.normalise_email): lower case, ASCII domain.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    timezone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Soft bounces since the last delivered message; past a threshold, suppressed.
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0)
    # "Don't track me": this reader's links are never rewritten, and no pixel.
    no_tracking: Mapped[bool] = mapped_column(Boolean, default=False)

    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="subscriber")


class MailingList(Base):
    __tablename__ = "mailing_lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # Subscribers without a time zone of their own get this one (local-time sending).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    opt_in: Mapped[OptIn] = mapped_column(
        Enum(OptIn, native_enum=False, length=20), default=OptIn.double
    )
    # Who sends this list's emails, when it is not the settings' organisation (lists
    # of different brands): "" falls back to NEWSLETTER_ORGANIZATION and so on.
    organization: Mapped[str] = mapped_column(String(500), default="")
    postal_address: Mapped[str] = mapped_column(String(500), default="")
    footer_note: Mapped[str] = mapped_column(String(500), default="")
    archive: Mapped[ArchiveVisibility] = mapped_column(
        Enum(ArchiveVisibility, native_enum=False, length=20), default=ArchiveVisibility.private
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Shown on the sign-up form and offered on preferences pages. A private list (for
    # staff, or a group whose very name is personal) is joined only by staff.
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Opens and clicks of this list's campaigns (a campaign may be more private, never
    # less); the open pixel is optional and off unless asked for.
    tracking: Mapped[TrackingMode] = mapped_column(
        Enum(TrackingMode, native_enum=False, length=20), default=TrackingMode.anonymous
    )
    track_opens: Mapped[bool] = mapped_column(Boolean, default=False)


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "list_id"),
        # The audience scan: confirmed members of a list in subscriber order.
        Index("ix_subscriptions_list_status_subscriber", "list_id", "status", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    status: Mapped[SubscriptionStatus] = mapped_column(
        Enum(SubscriptionStatus, native_enum=False, length=20)
    )
    source: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    mailing_list: Mapped[MailingList] = relationship()


class Suppression(Base):
    """An address never mailed again (hard bounce, complaint, manual)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        Index("uq_suppressions_email_canonical", func.lower(text("email")), unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # A forgotten person's entry keeps only a hash of the address (see email_hash).
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    email_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BounceEvent(Base):
    """A bounce, complaint or delivery report we acted on; the unique key makes a
    replayed notification harmless."""

    __tablename__ = "bounce_events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(50))  # dsn, ses, sendgrid, mailgun, postmark
    event_id: Mapped[str] = mapped_column(String(500))
    email: Mapped[str] = mapped_column(String(320), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # hard, soft, complaint, delayed, other
    detail: Mapped[str] = mapped_column(String(2000), default="")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ImportJob(Base):
    """One CSV import into a list (or a dry run of it): its counts and rejected rows.

    A dry run and an import of the CLI or the API finish at once. An import of the
    console runs in the background: queued with its CSV (`source_text`, dropped when
    it is done), claimed by the scheduler, saved batch by batch by a worker, each
    batch committed with `processed`, so a killed worker's job resumes where it was."""

    __tablename__ = "subscriber_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(300), default="")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="finished")  # queued, running, failed
    rows: Mapped[int] = mapped_column(Integer, default=0)  # data rows read
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    # [{"where": "row 3", "reason": "..."}]
    problems: Mapped[list[dict[str, str]]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source_text: Mapped[str | None] = mapped_column(Text)
    total: Mapped[int] = mapped_column(Integer, default=0)  # valid rows to save
    processed: Mapped[int] = mapped_column(Integer, default=0)  # of them, saved
    progress_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str] = mapped_column(Text, default="")

    mailing_list: Mapped[MailingList] = relationship()


class Segment(Base):
    """A saved filter over subscribers: a rule tree as JSON (see services/segments.py),
    compiled to SQL expressions when counted or when a run's audience is frozen."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(String(2000), default="")
    rules: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

"""What tracking stores: the run's links (destinations kept here, never in the email),
raw events (pruned after NEWSLETTER_TRACKING_RETENTION_DAYS), and what outlives them:
hourly counts and, per message, when it was first opened and clicked.

No table holds an IP address: an event keeps at most a truncated hash of it, salted
with the day (tracking/classify.py), so two events of one client on one day can be
told apart from two clients, and nothing more.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, UtcDateTime, utcnow

# A rollup or state row that is about the whole message, not one link.
NO_LINK = 0
# A rollup row whose list is not known (a list deleted since).
NO_LIST = 0


class EventKind(enum.StrEnum):
    open = "open"
    click = "click"


class TrackedLink(Base):
    """One distinct link of a run's email, by its position of first appearance. The
    email carries only (run, link id), signed; `destination` is where a click goes
    (staff may correct it after sending), `url` what the email linked to."""

    __tablename__ = "tracked_links"
    __table_args__ = (UniqueConstraint("run_id", "url_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    url_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of url (URLs may be long)
    url: Mapped[str] = mapped_column(Text)
    destination: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)  # 1-based, in the order of the email
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TrackingEvent(Base):
    """One open or click as it happened (append-only; a click is relabelled machine
    when it turns out to be part of a scanner's burst). `delivery_id` only in
    individual mode; `message_key` tells one message's events apart (a random value
    in anonymous mode, known to nobody but the email)."""

    __tablename__ = "tracking_events"
    __table_args__ = (
        Index("ix_tracking_events_run_message", "run_id", "message_key", "occurred_at"),
        Index("ix_tracking_events_occurred_at", "occurred_at"),
        Index("ix_tracking_events_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[EventKind] = mapped_column(Enum(EventKind, native_enum=False, length=10))
    link_id: Mapped[int | None] = mapped_column(ForeignKey("tracked_links.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(Integer, default=NO_LIST)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    message_key: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    bucket: Mapped[datetime] = mapped_column(UtcDateTime)  # its rollup row's hour (or day)
    user_agent_class: Mapped[str] = mapped_column(String(40), default="")
    machine: Mapped[bool] = mapped_column(Boolean, default=False)
    machine_reason: Mapped[str] = mapped_column(String(200), default="")
    client_hash: Mapped[str] = mapped_column(String(16), default="")


class TrackingRollup(Base):
    """Event counts per run, list, kind, link and hour (a day after the first two
    days), human and machine; updated with every event, kept when events are pruned."""

    __tablename__ = "tracking_rollups"
    __table_args__ = (UniqueConstraint("run_id", "list_id", "kind", "link_id", "bucket"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(Integer, default=NO_LIST)
    kind: Mapped[EventKind] = mapped_column(Enum(EventKind, native_enum=False, length=10))
    link_id: Mapped[int] = mapped_column(Integer, default=NO_LINK)
    bucket: Mapped[datetime] = mapped_column(UtcDateTime)
    human: Mapped[int] = mapped_column(Integer, default=0)
    machine: Mapped[int] = mapped_column(Integer, default=0)


class TrackedMessage(Base):
    """One message that was opened or clicked at least once: when first by a human,
    when first by a machine. Unique counts are counted here; a forgotten reader's row
    loses its delivery and key, so the counts stay and nothing leads to them."""

    __tablename__ = "tracked_messages"
    __table_args__ = (
        UniqueConstraint("run_id", "message_key"),
        Index("ix_tracked_messages_delivery", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    message_key: Mapped[str] = mapped_column(String(32))
    list_id: Mapped[int] = mapped_column(Integer, default=NO_LIST)
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    opened_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    machine_opened_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    machine_clicked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TrackedMessageLink(Base):
    """One link of one message that was clicked: first by a human, first by a machine."""

    __tablename__ = "tracked_message_links"
    __table_args__ = (
        UniqueConstraint("message_id", "link_id"),
        Index("ix_tracked_message_links_run_link", "run_id", "link_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("tracked_messages.id", ondelete="CASCADE"))
    link_id: Mapped[int] = mapped_column(ForeignKey("tracked_links.id", ondelete="CASCADE"))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    clicked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    machine_clicked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

"""The delivery ledger: one row per (run, subscriber), the record of what was sent."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, UtcDateTime, utcnow


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # waiting for a chunk task to claim it
    sending = "sending"  # claimed by a task (see claim, lease_until)
    sent = "sent"
    deferred = "deferred"
    failed = "failed"
    suppressed = "suppressed"
    cancelled = "cancelled"  # the run was cancelled before it was sent


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "subscriber_id"),
        Index("ix_deliveries_run_status_subscriber", "run_id", "status", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    # The list the recipient is on (the lowest id when on several): unsubscribe scope.
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_lists.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(DeliveryStatus, native_enum=False, length=20), default=DeliveryStatus.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # While sending: who claimed the row (the chunk task's id) and until when the
    # claim holds unless renewed. An expired claim means the task died.
    claim: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    smtp_reply: Mapped[str] = mapped_column(String(1000), default="")
    message_id: Mapped[str] = mapped_column(String(300), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

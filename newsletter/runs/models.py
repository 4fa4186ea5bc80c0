"""Runs and the delivery ledger: one occurrence of a campaign (or one step of a drip
sequence), and one row per (run, subscriber) recording what was sent."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, JsonType, UtcDateTime, utcnow


def new_archive_key() -> str:
    """128 random bits, URL-safe: a run's unguessable name in the archive."""
    return secrets.token_urlsafe(16)


class RunStatus(enum.StrEnum):
    preparing = "preparing"
    sending = "sending"
    paused = "paused"
    finished = "finished"
    cancelled = "cancelled"
    failed = "failed"  # could not be prepared (see error); nothing was sent
    skipped = "skipped"  # nothing new to send and the campaign skips empty runs


# A run in one of these may still send; every other status is final (but for a drip
# step, which opens again when new readers reach it).
ACTIVE_RUN_STATUSES = (RunStatus.preparing, RunStatus.sending, RunStatus.paused)


class Run(Base):
    """One occurrence of a campaign, with the content frozen when it started.

    A campaign occurrence (campaign_id, occurrence_at), or a step of a drip sequence
    (sequence_id, article_id): the same ledger, render-once and sending machinery
    serve both. Every change of `status` is made in `runs.lifecycle`.
    """

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("campaign_id", "occurrence_at"),
        UniqueConstraint("sequence_id", "article_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    sequence_id: Mapped[int | None] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    occurrence_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, native_enum=False, length=20), default=RunStatus.preparing, index=True
    )
    # The rendered snapshot (rendering.model.Snapshot as JSON); None until frozen.
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Bumped by chunk tasks as they work; a sending run with no progress for a while
    # has lost its queued tasks (broker flushed, workers killed) and is re-enqueued.
    last_progress_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When stall recovery first found the run without progress; cleared by the next
    # real progress. Set: the run is stalled (`newsletter runs stalled`).
    stalled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str] = mapped_column(Text, default="")
    # The run's name in archive URLs: random, so a private list's emails cannot be
    # found by counting run ids.
    archive_key: Mapped[str] = mapped_column(String(32), unique=True, default=new_archive_key)
    # How the run counts opens and clicks, frozen by the first chunk that sends it
    # (tracking/policy.py: the mode and pixel per list); None until then.
    tracking: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # Sent messages whose reader was forgotten since (their ledger rows are gone): the
    # run's reports still count them as sent, so rates keep their denominator.
    forgotten_sent: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def archive_path(self) -> str:
        """Where the web archive shows the run's email ("view in browser")."""
        return f"/archive/emails/{self.archive_key}"

    @property
    def tag(self) -> str:
        """ "c<campaign>" or "s<sequence>": names the run's origin in Feedback-ID headers."""
        return f"c{self.campaign_id}" if self.campaign_id else f"s{self.sequence_id}"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # waiting for a chunk task to claim it
    sending = "sending"  # claimed by a task (see claim, lease_until)
    sent = "sent"
    deferred = "deferred"
    failed = "failed"
    suppressed = "suppressed"
    cancelled = "cancelled"  # the run was cancelled before it was sent


# Rows that still need a send: a run is finished when it has none.
OPEN_DELIVERY_STATUSES = (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.deferred)


class Delivery(Base):
    """The ledger: one row per (run, subscriber), the record of what was sent."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "subscriber_id"),
        Index("ix_deliveries_run_status_subscriber", "run_id", "status", "subscriber_id"),
        # A reader's deliveries across runs: reports attribute an unsubscribe, bounce or
        # complaint to the last message before it; forget and export find them.
        Index("ix_deliveries_subscriber_sent", "subscriber_id", "sent_at"),
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
    # Individual tracking only: the first open and the first click, and whether that
    # first one was a machine's (a later human event replaces a machine's).
    first_open_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_open_machine: Mapped[bool] = mapped_column(Boolean, default=False)
    first_click_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_click_machine: Mapped[bool] = mapped_column(Boolean, default=False)


class SchedulerHeartbeat(Base):
    """The last tick of each scheduler (by host and process): ops see a scheduler that
    stopped ticking (newsletter_scheduler_last_tick_timestamp_seconds, the scheduler's
    health check) even when its process still runs."""

    __tablename__ = "scheduler_heartbeats"

    scheduler: Mapped[str] = mapped_column(String(200), primary_key=True)
    ticked_at: Mapped[datetime] = mapped_column(UtcDateTime)

"""How far a run has got: one view for every face (CLI, API, console, metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.audience.models import BounceEvent, Subscriber
from newsletter.db import utcnow
from newsletter.runs.ledger import delivery_counts
from newsletter.runs.models import (
    ACTIVE_RUN_STATUSES,
    Delivery,
    DeliveryStatus,
    Run,
    RunStatus,
)

RATE_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True)
class RunProgress:
    """A run's ledger by status, its recent send rate and the time left at that rate.

    `counts` has every delivery status (0 when none); `left` is what still needs a
    send (pending, sending, deferred)."""

    run: int
    campaign: int | None
    sequence: int | None
    name: str
    status: str
    occurrence_at: datetime
    recipients: int
    error: str
    counts: dict[str, int] = field(default_factory=dict)
    rate_per_second: float = 0.0
    eta_seconds: float | None = None

    @property
    def left(self) -> int:
        return sum(
            self.counts.get(s, 0)
            for s in (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.deferred)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "campaign": self.campaign,
            "sequence": self.sequence,
            "name": self.name,
            "status": self.status,
            "occurrence_at": self.occurrence_at.isoformat(),
            "recipients": self.recipients,
            "error": self.error,
            **self.counts,
            "left": self.left,
            "rate_per_second": self.rate_per_second,
            "eta_seconds": self.eta_seconds,
        }


def sent_recently(session: Session, run_id: int, now: datetime) -> int:
    """Messages of the run handed over in the last RATE_WINDOW."""
    recent = (
        select(func.count())
        .select_from(Delivery)
        .where(
            Delivery.run_id == run_id,
            Delivery.status == DeliveryStatus.sent,
            Delivery.sent_at >= now - RATE_WINDOW,
        )
    )
    return session.scalar(recent) or 0


def run_progress(session: Session, run: Run, name: str = "") -> RunProgress:
    """The progress of `run`; `name` says what it is (a campaign's name, a series)."""
    by_status = delivery_counts(session, run.id)
    counts = {status.value: by_status.get(status, 0) for status in DeliveryStatus}
    rate = 0.0
    if run.status in ACTIVE_RUN_STATUSES:
        rate = sent_recently(session, run.id, utcnow()) / RATE_WINDOW.total_seconds()
    progress = RunProgress(
        run=run.id,
        campaign=run.campaign_id,
        sequence=run.sequence_id,
        name=name,
        status=run.status.value,
        occurrence_at=run.occurrence_at,
        recipients=run.recipients,
        error=run.error,
        counts=counts,
        rate_per_second=round(rate, 1),
    )
    return replace(progress, eta_seconds=round(progress.left / rate)) if rate else progress


def active_runs(session: Session) -> list[Run]:
    """Runs that may still send (preparing, sending, paused), oldest first."""
    return list(
        session.scalars(select(Run).where(Run.status.in_(ACTIVE_RUN_STATUSES)).order_by(Run.id))
    )


def find_deliveries(
    session: Session,
    *,
    run_id: int | None = None,
    campaign_id: int | None = None,
    email: str | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Ledger rows by id (keyset after `after_id`): who got what, with status, attempts
    and the server's last reply ("did Alice get it?")."""
    query = (
        select(Delivery, Run.campaign_id)
        .join(Run, Run.id == Delivery.run_id)
        .where(Delivery.id > after_id)
    )
    if run_id is not None:
        query = query.where(Delivery.run_id == run_id)
    if campaign_id is not None:
        query = query.where(Run.campaign_id == campaign_id)
    if email:
        query = query.where(Delivery.email == email.strip())
    if status:
        query = query.where(Delivery.status == DeliveryStatus(status))
    rows = session.execute(query.order_by(Delivery.id).limit(limit)).all()
    return [_delivery(row, campaign) for row, campaign in rows]


def _delivery(row: Delivery, campaign_id: int | None) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "run": row.run_id,
        "campaign": campaign_id,
        "subscriber": row.subscriber_id,
        "email": row.email,
        "status": row.status.value,
        "attempts": row.attempts,
        "smtp_reply": row.smtp_reply,
        "message_id": row.message_id,
        "sent_at": iso(row.sent_at),
        "next_attempt_at": iso(row.next_attempt_at),
        "updated_at": iso(row.updated_at),
    }


# --- what the metrics collector reads at scrape time (tasks/monitoring.py) -----------

_LEFT = (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.deferred)
_WAITING = (DeliveryStatus.pending, DeliveryStatus.sending)


def pending_by_origin(session: Session) -> dict[str, int]:
    """Recipients still to send (pending, sending, deferred) of every sending run, per
    campaign id (a drip step's run: `sequence-<id>`)."""
    rows = session.execute(
        select(Run.campaign_id, Run.sequence_id, func.count())
        .join(Delivery, Delivery.run_id == Run.id)
        .where(Run.status == RunStatus.sending, Delivery.status.in_(_LEFT))
        .group_by(Run.campaign_id, Run.sequence_id)
    ).all()
    found: dict[str, int] = {}
    for campaign_id, sequence_id, count in rows:
        origin = str(campaign_id) if campaign_id is not None else f"sequence-{sequence_id}"
        found[origin] = found.get(origin, 0) + int(count)
    return found


def oldest_pending_since(session: Session) -> datetime | None:
    """Since when the oldest delivery of a sending run has waited for a send (pending,
    or claimed and not yet recorded); deferred rows wait on purpose and do not count."""
    return session.scalar(
        select(func.min(Delivery.updated_at))
        .join(Run, Run.id == Delivery.run_id)
        .where(Run.status == RunStatus.sending, Delivery.status.in_(_WAITING))
    )


def oldest_pending_by_run(session: Session) -> dict[int, datetime]:
    """`oldest_pending_since`, per sending run (the ops page's column)."""
    rows = session.execute(
        select(Delivery.run_id, func.min(Delivery.updated_at))
        .join(Run, Run.id == Delivery.run_id)
        .where(Run.status == RunStatus.sending, Delivery.status.in_(_WAITING))
        .group_by(Delivery.run_id)
    ).all()
    return {int(run_id): since for run_id, since in rows if since is not None}


def runs_with(session: Session, statuses: tuple[DeliveryStatus, ...], limit: int) -> list[Run]:
    """The latest `limit` runs that have ledger rows in one of `statuses`, newest first."""
    having = select(Delivery.run_id).where(Delivery.status.in_(statuses)).distinct()
    return list(
        session.scalars(select(Run).where(Run.id.in_(having)).order_by(Run.id.desc()).limit(limit))
    )


def runs_by_status(session: Session) -> dict[str, int]:
    """How many runs are preparing, sending or paused."""
    rows = session.execute(
        select(Run.status, func.count())
        .where(Run.status.in_(ACTIVE_RUN_STATUSES))
        .group_by(Run.status)
    ).all()
    counts = {status.value: 0 for status in ACTIVE_RUN_STATUSES}
    counts.update({status.value: int(count) for status, count in rows})
    return counts


@dataclass(frozen=True)
class RunBounces:
    """One recent run's messages handed over and how many of them bounced: refused
    at hand-over (failed in the ledger) or reported by a DSN or provider afterwards."""

    run: int
    origin: str
    handed_over: int
    bounced: int


def recent_run_bounces(session: Session, since: datetime) -> list[RunBounces]:
    """Runs sending now or finished after `since`, with their bounces. Reported
    bounces are matched through the subscriber (bounce events name an address)."""
    runs = session.execute(
        select(Run.id, Run.campaign_id, Run.sequence_id, Run.started_at).where(
            (Run.status == RunStatus.sending)
            | ((Run.status == RunStatus.finished) & (Run.finished_at >= since))
        )
    ).all()
    found = []
    for run_id, campaign_id, sequence_id, started_at in runs:
        counts = delivery_counts(session, run_id)
        sent = counts.get(DeliveryStatus.sent, 0)
        failed = counts.get(DeliveryStatus.failed, 0)
        reported = session.scalar(
            select(func.count(func.distinct(Delivery.id)))
            .select_from(BounceEvent)
            .join(Subscriber, Subscriber.email == BounceEvent.email)
            .join(
                Delivery,
                (Delivery.run_id == run_id) & (Delivery.subscriber_id == Subscriber.id),
            )
            .where(
                BounceEvent.kind.in_(("hard", "soft")),
                Delivery.status == DeliveryStatus.sent,
                BounceEvent.received_at >= (started_at or since),
            )
        )
        origin = str(campaign_id) if campaign_id is not None else f"sequence-{sequence_id}"
        found.append(RunBounces(run_id, origin, sent + failed, failed + int(reported or 0)))
    return found

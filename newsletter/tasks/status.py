"""The ops view: queues, workers, and the progress of every active run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign, Run, RunStatus
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery.ledger import delivery_counts
from newsletter.delivery.models import Delivery, DeliveryStatus
from newsletter.tasks.app import QUEUE, app

RATE_WINDOW = timedelta(seconds=60)


@dataclass
class RunProgress:
    run: int
    campaign: int
    name: str
    status: str
    recipients: int
    sent: int
    deferred: int
    failed: int
    pending: int
    suppressed: int
    rate_per_second: float
    eta_seconds: float | None


@dataclass
class Status:
    broker: str
    queues: dict[str, int | None]
    workers: list[str] | None
    runs: list[RunProgress] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def run_progress(session: Session, run: Run, campaign: Campaign) -> RunProgress:
    counts = delivery_counts(session, run.id)
    recent = (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.run_id == run.id,
                Delivery.status == DeliveryStatus.sent,
                Delivery.sent_at >= utcnow() - RATE_WINDOW,
            )
        )
        or 0
    )
    rate = recent / RATE_WINDOW.total_seconds()
    left = sum(
        counts.get(s, 0)
        for s in (DeliveryStatus.pending, DeliveryStatus.sending, DeliveryStatus.deferred)
    )
    return RunProgress(
        run=run.id,
        campaign=campaign.id,
        name=campaign.name,
        status=run.status.value,
        recipients=run.recipients,
        sent=counts.get(DeliveryStatus.sent, 0),
        deferred=counts.get(DeliveryStatus.deferred, 0),
        failed=counts.get(DeliveryStatus.failed, 0),
        pending=counts.get(DeliveryStatus.pending, 0) + counts.get(DeliveryStatus.sending, 0),
        suppressed=counts.get(DeliveryStatus.suppressed, 0),
        rate_per_second=round(rate, 1),
        eta_seconds=round(left / rate) if rate else None,
    )


def queue_depths(settings: Settings) -> dict[str, int | None]:
    """Messages waiting in each Celery queue (None when the broker cannot tell)."""
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return {QUEUE: None}
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=2)
    # kombu keeps a Redis list per queue (plus one per priority step, suffixed).
    keys = [k for k in client.scan_iter(match=f"{QUEUE}*") if client.type(k) == b"list"]
    return {QUEUE: sum(int(client.llen(k)) for k in keys)}


def workers_seen(settings: Settings) -> list[str] | None:
    if settings.embedded_broker:
        return None
    replies = app.control.inspect(timeout=1.0).ping() or {}
    return sorted(replies)


def collect_status(session: Session, settings: Settings) -> Status:
    active = session.execute(
        select(Run, Campaign)
        .join(Campaign, Campaign.id == Run.campaign_id)
        .where(Run.status.in_((RunStatus.preparing, RunStatus.sending, RunStatus.paused)))
        .order_by(Run.id)
    ).all()
    return Status(
        broker="embedded (in-process)" if settings.embedded_broker else settings.broker_url,
        queues=queue_depths(settings),
        workers=workers_seen(settings),
        runs=[run_progress(session, run, campaign) for run, campaign in active],
    )

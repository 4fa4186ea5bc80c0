"""The ops view: queues, workers, and the progress of every active run."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign
from newsletter.config import Settings
from newsletter.delivery.relays import RelaySummary, read_relay_summaries
from newsletter.runs.models import Run
from newsletter.runs.progress import RunProgress, active_runs, run_progress
from newsletter.sequences.models import Sequence
from newsletter.tasks.app import QUEUE, app


@dataclass
class Status:
    broker: str
    queues: dict[str, int | None]
    workers: list[str] | None
    runs: list[RunProgress] = field(default_factory=list)
    # Per relay, as the workers last reported it (None: no Redis to read it from).
    relays: list[RelaySummary] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "queues": self.queues,
            "workers": self.workers,
            "runs": [run.as_json() for run in self.runs],
            "relays": None if self.relays is None else [asdict(r) for r in self.relays],
        }


log = logging.getLogger(__name__)


def relay_summaries(settings: Settings) -> list[RelaySummary] | None:
    """Each relay's rate, connections and errors over the workers (from Redis)."""
    if not settings.shared_redis_url:
        return None
    import redis

    try:
        client = redis.Redis.from_url(settings.shared_redis_url, socket_timeout=2)
        return read_relay_summaries(client)
    except redis.RedisError as exc:
        log.warning("cannot read the relays' state: %s", exc)
        return None


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


def run_name(session: Session, run: Run) -> str:
    """What a run is, for people: its campaign's name, or its sequence's series and list."""
    if run.campaign_id is not None:
        return session.get_one(Campaign, run.campaign_id).name
    assert run.sequence_id is not None
    sequence = session.get_one(Sequence, run.sequence_id)
    return f"{sequence.series.title} → {sequence.mailing_list.name}"


def collect_status(session: Session, settings: Settings) -> Status:
    return Status(
        broker="embedded (in-process)" if settings.embedded_broker else settings.broker_url,
        queues=queue_depths(settings),
        workers=workers_seen(settings),
        runs=[run_progress(session, run, run_name(session, run)) for run in active_runs(session)],
        relays=relay_summaries(settings),
    )

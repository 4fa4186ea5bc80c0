"""The scheduler: a tick every few seconds turns due work in the database into tasks."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType

from sqlalchemy import exists, or_, select

from newsletter.audience.importer import claim_import_jobs, drop_stale_uploads
from newsletter.campaigns.runs import claim_due_campaigns, finish_run
from newsletter.content.models import Feed
from newsletter.db import utcnow
from newsletter.runs.ledger import Chunk, release_due_retries
from newsletter.runs.lifecycle import record_tick, recover_stalled, sending_runs
from newsletter.sequences.engine import run_sequences
from newsletter.services.segments import segment_filter
from newsletter.services.webhooks import claim_due
from newsletter.tasks.app import Runtime
from newsletter.tasks.jobs import (
    deliver_webhook,
    enqueue_chunk,
    import_subscribers,
    poll_feeds,
    prepare_run,
)
from newsletter.tracking.retention import prune_events

PRUNE_EVERY = timedelta(hours=1)

log = logging.getLogger(__name__)
# Whose heartbeat a tick writes: this machine (two schedulers on one machine share it).
SCHEDULER_NAME = socket.gethostname()


@dataclass
class TickReport:
    started_runs: list[int] = field(default_factory=list)
    retried_chunks: list[Chunk] = field(default_factory=list)
    requeued_chunks: list[Chunk] = field(default_factory=list)
    reprepared_runs: list[int] = field(default_factory=list)
    sequence_steps: int = 0
    finished_runs: list[int] = field(default_factory=list)
    pruned_events: int = 0
    imports: list[int] = field(default_factory=list)
    webhooks: list[int] = field(default_factory=list)


def tick(rt: Runtime, now: datetime | None = None) -> TickReport:
    """One pass: claim due campaigns, release due retries, recover stalled runs,
    claim background imports, close finished runs; once an hour, delete tracking events
    past their retention.

    Claims are committed before anything is enqueued, so a task never sees an
    uncommitted row, and a second scheduler never claims the same work.
    """
    now = now or utcnow()
    cfg = rt.settings
    report = TickReport()
    with rt.sessions() as session:
        feeds_due = session.scalar(
            select(exists().where(or_(Feed.next_poll_at.is_(None), Feed.next_poll_at <= now)))
        )
    if feeds_due:
        # First, so a digest claimed below can include what the feeds bring (with the
        # embedded broker this runs inline; with workers, "since the last run" digests
        # also count articles imported late, see campaigns.service.select_articles).
        poll_feeds.delay(now.isoformat())
    with rt.sessions() as session:
        report.started_runs = claim_due_campaigns(session, now, timedelta(hours=cfg.catch_up_hours))
        report.retried_chunks = release_due_retries(
            session, now, timedelta(hours=cfg.retry_lifetime_hours), cfg.chunk_size
        )
        report.reprepared_runs, report.requeued_chunks = recover_stalled(
            session, now, timedelta(seconds=cfg.stall_seconds), cfg.chunk_size
        )
        report.imports = claim_import_jobs(session, now, timedelta(seconds=cfg.stall_seconds))
        drop_stale_uploads(session, now)
        session.commit()
        steps = run_sequences(session, now, cfg.chunk_size, segment_filter)
        session.commit()
        report.sequence_steps = steps.steps_sent
        report.requeued_chunks.extend(steps.chunks)
    for run_id in (*report.started_runs, *report.reprepared_runs):
        prepare_run.delay(run_id)
    for chunk in (*report.retried_chunks, *report.requeued_chunks):
        enqueue_chunk(chunk)
    for job_id in report.imports:
        import_subscribers.delay(job_id)
    with rt.sessions() as session:
        report.finished_runs = [r for r in sending_runs(session) if finish_run(session, r)]
        # The heartbeat: written last, so a tick that hangs or fails on the way shows.
        record_tick(session, SCHEDULER_NAME, utcnow())
        session.commit()
    # Webhook events (outbox rows) due now, including those this tick's work added.
    with rt.sessions() as session:
        report.webhooks = claim_due(session, utcnow())
        session.commit()
    for outbox_id in report.webhooks:
        deliver_webhook.delay(outbox_id)
    if rt.pruned_at is None or now - rt.pruned_at >= PRUNE_EVERY:
        # Raw opens and clicks past their retention go; the counts stay (tracking/).
        with rt.sessions() as session:
            report.pruned_events = prune_events(session, cfg.tracking_retention_days, now)
        rt.pruned_at = now
    return report


class Stopper:
    """Set by SIGTERM/SIGINT so loops end cleanly between ticks."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received signal %s, stopping after this tick", signum)
            self.event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)


def run_forever(rt: Runtime, stopper: Stopper) -> None:
    interval = rt.settings.scheduler_interval
    log.info("scheduler started (tick every %.1fs)", interval)
    while not stopper.event.is_set():
        try:
            report = tick(rt)
            if report.started_runs or report.finished_runs:
                log.info(
                    "started runs %s, finished runs %s", report.started_runs, report.finished_runs
                )
        except Exception:
            # A database or broker hiccup must not end the scheduler; the next tick
            # retries from the database, which holds all state.
            log.exception("scheduler tick failed")
        stopper.event.wait(interval)
    log.info("scheduler stopped")

"""The scheduler: a tick every few seconds turns due work in the database into tasks."""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType

from sqlalchemy import select

from newsletter.campaigns.models import Run, RunStatus
from newsletter.campaigns.runs import claim_due_campaigns, finish_run_if_done
from newsletter.db import utcnow
from newsletter.delivery.ledger import Chunk, release_due_retries
from newsletter.tasks.app import Runtime
from newsletter.tasks.jobs import enqueue_chunk, prepare_run

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    started_runs: list[int] = field(default_factory=list)
    retried_chunks: list[Chunk] = field(default_factory=list)
    finished_runs: list[int] = field(default_factory=list)


def tick(rt: Runtime, now: datetime | None = None) -> TickReport:
    """One pass: claim due campaigns, release due retries, close finished runs.

    Claims are committed before anything is enqueued, so a task never sees an
    uncommitted row, and a second scheduler never claims the same work.
    """
    now = now or utcnow()
    report = TickReport()
    with rt.sessions() as session:
        report.started_runs = claim_due_campaigns(session, now)
        report.retried_chunks = release_due_retries(session, now)
        session.commit()
    for run_id in report.started_runs:
        prepare_run.delay(run_id)
    for chunk in report.retried_chunks:
        enqueue_chunk(chunk)
    with rt.sessions() as session:
        sending = session.scalars(select(Run.id).where(Run.status == RunStatus.sending)).all()
        report.finished_runs = [r for r in sending if finish_run_if_done(session, r)]
        session.commit()
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

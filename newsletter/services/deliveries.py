"""Deliveries for ops: what failed or waits, handing it back to send again, stalled runs,
and the console's ops page in one read (`ops_overview`).

One set of functions for the CLI (`newsletter deliveries list|retry`, `newsletter runs
stalled`), the staff API (`/api/v1/deliveries`, `/api/v1/runs/{id}/retry`,
`/api/v1/runs/stalled`) and the console's ops page.

A retry goes through the ledger, never around it: the chosen rows (failed, or
deferred) are handed back (`ledger.hand_back`), the run is reopened if it had
finished, and the next scheduler tick enqueues them like any stalled work, whichever
broker and worker. Rows already `sent` are never touched, so nobody gets a message
twice; addresses suppressed since (hard bounce, complaint) are left out. Every retry
is in the audit log with who asked, why, and how many rows went back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

import newsletter.models  # noqa: F401  (every mapped class: a CLI command may load no other)
from newsletter.accounts import audit
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.runs import lifecycle
from newsletter.runs.ledger import hand_back
from newsletter.runs.models import DeliveryStatus, Run
from newsletter.runs.progress import (
    RunProgress,
    active_runs,
    find_deliveries,
    oldest_pending_by_run,
    oldest_pending_since,
    run_progress,
    runs_with,
)
from newsletter.services.attention import run_name

RETRYABLE = (DeliveryStatus.failed.value, DeliveryStatus.deferred.value)
MAX_REASON = 500


@dataclass(frozen=True)
class RetryReport:
    run: int
    status: str  # which rows were handed back: failed or deferred
    requeued: int
    suppressed: int  # rows left as they were: their address is suppressed now
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "status": self.status,
            "requeued": self.requeued,
            "skipped_suppressed": self.suppressed,
            "reason": self.reason,
        }

    def summary(self) -> str:
        kept = f", {self.suppressed} left alone (address suppressed)" if self.suppressed else ""
        return f"run {self.run}: {self.requeued} {self.status} deliveries handed back{kept}"


def parse_retry_status(status: str) -> DeliveryStatus:
    if status not in RETRYABLE:
        raise InvalidInputError(f"status: only {' or '.join(RETRYABLE)} deliveries are retried")
    return DeliveryStatus(status)


def retry_deliveries(session: Session, run_id: int, status: str, reason: str = "") -> RetryReport:
    """Hand the run's `status` rows (failed or deferred) back to be sent once more, and
    audit it; flushes (the caller commits). The next scheduler tick enqueues them."""
    chosen = parse_retry_status(status)
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:
        raise InvalidInputError(f"reason: at most {MAX_REASON} characters")
    run = lifecycle.reopen_for_retry(session, run_id)
    requeued, suppressed = hand_back(session, run.id, chosen, utcnow())
    audit.record(
        session,
        "deliveries.retry",
        f"run:{run.id}",
        detail={
            "status": chosen.value,
            "requeued": requeued,
            "skipped_suppressed": suppressed,
            "reason": reason,
        },
    )
    session.flush()
    return RetryReport(run.id, chosen.value, requeued, suppressed, reason)


def list_deliveries(
    session: Session,
    *,
    run_id: int | None = None,
    campaign_id: int | None = None,
    email: str | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Ledger rows (see runs.progress.find_deliveries); InvalidInputError for an
    unknown status."""
    if status is not None and status not in DeliveryStatus.__members__:
        raise InvalidInputError(f"status must be one of {', '.join(DeliveryStatus)}")
    return find_deliveries(
        session,
        run_id=run_id,
        campaign_id=campaign_id,
        email=email,
        status=status,
        after_id=after_id,
        limit=limit,
    )


@dataclass(frozen=True)
class StalledRun:
    run: int
    campaign: int | None
    sequence: int | None
    status: str
    since: datetime | None  # no progress since then
    left: int  # recipients still to send

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "campaign": self.campaign,
            "sequence": self.sequence,
            "status": self.status,
            "stalled_since": self.since.isoformat() if self.since else None,
            "left": self.left,
        }


def stalled(
    session: Session, stall_seconds: float, now: datetime | None = None
) -> list[StalledRun]:
    """Runs that may send but have not moved (see lifecycle.stalled_runs)."""
    now = now or utcnow()
    found = []
    for run in lifecycle.stalled_runs(session, now, timedelta(seconds=stall_seconds)):
        found.append(
            StalledRun(
                run.id,
                run.campaign_id,
                run.sequence_id,
                run.status.value,
                _since(run),
                run_progress(session, run).left,
            )
        )
    return found


def _since(run: Run) -> datetime | None:
    if run.stalled_at is not None:
        return run.stalled_at
    return run.last_progress_at


# --- the console's ops page -------------------------------------------------------------

RECENT_RUNS_WITH_FAILURES = 20


@dataclass(frozen=True)
class RunForOps:
    """A run as ops sees it: its progress and, while sending, since when its oldest
    waiting delivery has waited."""

    progress: RunProgress
    oldest_pending_since: datetime | None = None

    def oldest_pending_seconds(self, now: datetime) -> float | None:
        since = self.oldest_pending_since
        return max(0.0, (now - since).total_seconds()) if since is not None else None


@dataclass(frozen=True)
class OpsOverview:
    """Runs that may send, runs that stalled, recent runs with failed or deferred rows
    (what a retry hands back), and the scheduler's heartbeat: the same reads as the
    metrics collector (tasks/monitoring.py) and `newsletter runs stalled`."""

    now: datetime
    running: list[RunForOps]
    stalled: list[StalledRun]
    with_failures: list[RunProgress]
    last_tick: datetime | None
    oldest_pending_since: datetime | None

    @property
    def last_tick_seconds(self) -> float | None:
        if self.last_tick is None:
            return None
        return max(0.0, (self.now - self.last_tick).total_seconds())

    @property
    def oldest_pending_seconds(self) -> float | None:
        if self.oldest_pending_since is None:
            return None
        return max(0.0, (self.now - self.oldest_pending_since).total_seconds())


def ops_overview(
    session: Session, stall_seconds: float, now: datetime | None = None
) -> OpsOverview:
    """Everything the ops page shows but the broker's side (tasks.monitoring)."""
    now = now or utcnow()
    waiting = oldest_pending_by_run(session)
    running = [
        RunForOps(run_progress(session, run, run_name(session, run)), waiting.get(run.id))
        for run in active_runs(session)
    ]
    failing = runs_with(
        session, (DeliveryStatus.failed, DeliveryStatus.deferred), RECENT_RUNS_WITH_FAILURES
    )
    return OpsOverview(
        now=now,
        running=running,
        stalled=stalled(session, stall_seconds, now),
        with_failures=[run_progress(session, run, run_name(session, run)) for run in failing],
        last_tick=lifecycle.last_tick(session),
        oldest_pending_since=oldest_pending_since(session),
    )


def run_for_ops(session: Session, run_id: int) -> RunProgress:
    """One run's progress by id, named; NotFoundError for an unknown run."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    return run_progress(session, run, run_name(session, run))

"""Deliveries for ops: what failed or waits, handing it back to send again, stalled runs.

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
from newsletter.errors import InvalidInputError
from newsletter.runs import lifecycle
from newsletter.runs.ledger import hand_back
from newsletter.runs.models import DeliveryStatus, Run
from newsletter.runs.progress import find_deliveries, run_progress

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

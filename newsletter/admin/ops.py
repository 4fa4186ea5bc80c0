"""Ops (issues 11 and 13): what is sending and how long its oldest recipient has
waited, stalled runs, the scheduler's heartbeat, the queue and the workers; a run's
failed and deferred deliveries, page by page; and handing them back to be sent once
more, behind a confirmation that says how many, with a reason for the audit log.

The reads are the service functions the CLI (`newsletter deliveries list|retry`,
`newsletter runs stalled`), the API and the metrics collector use; the retry is
`services.deliveries.retry_deliveries`, which never touches a `sent` row.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter.admin.common import PREFIX, ReadSession, Viewer, needs, redirect, render, write
from newsletter.admin.i18n import _
from newsletter.services.deliveries import (
    MAX_REASON,
    RETRYABLE,
    list_deliveries,
    ops_overview,
    parse_retry_status,
    retry_deliveries,
    run_for_ops,
)
from newsletter.tasks.monitoring import QueueProbe, broker_health

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("deliveries:read"))]
Retrier = Annotated[Viewer, Depends(needs("deliveries:write"))]
PAGE = 50
RetryStatus = Annotated[str, Form(pattern="^(failed|deferred)$")]
Reason = Annotated[str, Form(max_length=MAX_REASON)]


def _probe(request: Request) -> QueueProbe | None:
    probe: QueueProbe | None = getattr(request.app.state, "queue_probe", None)
    return probe


@router.get("/ops")
def ops_page(request: Request, viewer: Reader, session: ReadSession) -> Response:
    """Sending runs, stalled runs, runs with failures; heartbeat, queue, workers.
    (A plain handler runs in a worker thread: the workers' ping waits a second.)"""
    settings = request.app.state.console.settings
    found = ops_overview(session, settings.stall_seconds)
    broker = broker_health(settings, _probe(request))
    return render(request, "ops.html", viewer, title=_("Ops"), found=found, broker=broker)


@router.get("/ops/runs/{run_id}")
def run_deliveries(
    run_id: int,
    request: Request,
    viewer: Reader,
    session: ReadSession,
    status: Annotated[str, Query(pattern="^(failed|deferred)$")] = "failed",
    after: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """The run's failed (or deferred) deliveries, PAGE at a time by id."""
    progress = run_for_ops(session, run_id)
    rows = list_deliveries(session, run_id=run_id, status=status, after_id=after, limit=PAGE + 1)
    return render(
        request,
        "ops_run.html",
        viewer,
        title=_("Run {run}: {status} deliveries").format(run=run_id, status=status),
        run=progress,
        chosen=status,
        rows=rows[:PAGE],
        next_after=rows[PAGE - 1]["id"] if len(rows) > PAGE else None,
        after=after,
        statuses=RETRYABLE,
        reason="",
    )


@router.post("/ops/runs/{run_id}/retry/confirm")
def confirm_retry(
    run_id: int,
    request: Request,
    viewer: Retrier,
    session: ReadSession,
    status: RetryStatus,
    reason: Reason = "",
) -> Response:
    """How many rows would go back, before anything does."""
    chosen = parse_retry_status(status)
    progress = run_for_ops(session, run_id)
    return render(
        request,
        "ops_retry_confirm.html",
        viewer,
        title=_("Confirm: send run {run}'s {status} deliveries again").format(
            run=run_id, status=chosen.value
        ),
        run=progress,
        chosen=chosen.value,
        count=progress.counts.get(chosen.value, 0),
        reason=" ".join(reason.split()),
    )


@router.post("/ops/runs/{run_id}/retry")
def retry(
    run_id: int,
    request: Request,
    viewer: Retrier,
    status: RetryStatus,
    reason: Reason = "",
) -> Response:
    """Hand the rows back to the ledger (audited); the next scheduler tick sends them."""

    def work(session: Session) -> str:
        return retry_deliveries(session, run_id, status, reason).summary()

    done = write(request, viewer, work)
    return redirect(f"{PREFIX}/ops/runs/{run_id}?status={status}", done)

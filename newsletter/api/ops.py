"""Ops: Prometheus metrics, failed deliveries sent again, stalled runs.

`GET /metrics` needs the `metrics:read` scope (a token for Prometheus that reads
nothing else: no address, no content). The deliveries list itself is
`GET /deliveries?run=&status=failed` (campaigns.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.api.common import (
    Caller,
    Id,
    ReadSession,
    api_of,
    json_response,
    scoped,
    write,
)
from newsletter.services.deliveries import retry_deliveries, stalled

router = APIRouter()


class RetryIn(BaseModel):
    status: str = Field(default="failed", pattern="^(failed|deferred)$")
    reason: str = Field(default="", max_length=500)


class RetryOut(BaseModel):
    run: int
    status: str
    requeued: int
    skipped_suppressed: int
    reason: str


class StalledRunOut(BaseModel):
    run: int
    campaign: int | None
    sequence: int | None
    status: str
    stalled_since: str | None
    left: int


class StalledRuns(BaseModel):
    items: list[StalledRunOut]


@router.get("/metrics", tags=["ops"], response_class=Response)
def prometheus_metrics(
    request: Request, caller: Annotated[Caller, Depends(scoped("metrics:read"))]
) -> Response:
    """Prometheus' text format: counters of every process sharing the metrics folder,
    and the database and broker gauges read now."""
    collector = request.app.state.collector
    return Response(metrics.exposition([collector]), media_type=metrics.CONTENT_TYPE)


@router.get("/runs/stalled", response_model=StalledRuns, tags=["ops"])
def stalled_runs(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("deliveries:read"))],
    session: ReadSession,
) -> JSONResponse:
    """Runs that may send but have not moved: found stalled by the scheduler, or
    without progress for NEWSLETTER_STALL_SECONDS."""
    found = stalled(session, api_of(request).settings.stall_seconds)
    return json_response(StalledRuns(items=[StalledRunOut(**s.as_json()) for s in found]))


@router.post("/runs/{run_id}/retry", response_model=RetryOut, tags=["ops"])
def retry(
    request: Request,
    run_id: Id,
    body: RetryIn,
    caller: Annotated[Caller, Depends(scoped("deliveries:write"))],
) -> Response:
    """Send the run's failed (or deferred) deliveries once more, through the ledger:
    the next scheduler tick enqueues them. Sent deliveries are never touched;
    addresses suppressed since are left out. Audited with the reason."""

    def work(session: Session) -> tuple[int, BaseModel, str]:
        report = retry_deliveries(session, run_id, body.status, body.reason)
        return 200, RetryOut(**report.as_json()), ""

    return write(request, caller, body, work)

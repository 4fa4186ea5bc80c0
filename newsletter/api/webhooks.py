"""Outgoing webhooks: endpoints, a test event, the delivery log (services/webhooks.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from newsletter.api.common import (
    Caller,
    Id,
    ReadSession,
    api_of,
    decode_cursor,
    page,
    scoped,
    write,
)
from newsletter.api.schemas import (
    Page,
    WebhookAttemptOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookTestOut,
)
from newsletter.services import webhooks

router = APIRouter()
Reader = Annotated[Caller, Depends(scoped("webhooks:read"))]
Writer = Annotated[Caller, Depends(scoped("webhooks:write"))]
Cursor = Annotated[str | None, Query(max_length=100)]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/webhooks", response_model=Page[WebhookOut], tags=["webhooks"])
def list_webhooks(
    request: Request, caller: Reader, session: ReadSession, cursor: Cursor = None, limit: Limit = 50
) -> JSONResponse:
    rows = webhooks.list_endpoints(session, decode_cursor(cursor), limit)
    items = [WebhookOut(**webhooks.describe_endpoint(e)) for e in rows]
    return page(request, items, rows[-1].id if rows else None, limit)


@router.post("/webhooks", status_code=201, response_model=WebhookCreated, tags=["webhooks"])
def create(body: WebhookIn, request: Request, caller: Writer) -> Response:
    """Register an endpoint: the answer holds its signing secret, shown only now."""
    settings = api_of(request).settings

    def work(session: Session) -> tuple[int, WebhookCreated, str]:
        made = webhooks.create_endpoint(session, settings, body.url, body.events, body.description)
        out = WebhookCreated(**webhooks.describe_endpoint(made.endpoint), secret=made.secret)
        return 201, out, f"/api/v1/webhooks/{made.endpoint.id}"

    return write(request, caller, body, work)


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, tags=["webhooks"])
def get_one(webhook_id: Id, caller: Reader, session: ReadSession) -> WebhookOut:
    return WebhookOut(**webhooks.describe_endpoint(webhooks.get_endpoint(session, webhook_id)))


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOut, tags=["webhooks"])
def update(webhook_id: Id, body: WebhookPatch, request: Request, caller: Writer) -> Response:
    """Change the URL, events or description; enable (failures in a row start again;
    waiting events go out) or disable."""
    settings = api_of(request).settings

    def work(session: Session) -> tuple[int, WebhookOut, str]:
        endpoint = webhooks.update_endpoint(
            session,
            settings,
            webhook_id,
            url=body.url,
            events=body.events,
            description=body.description,
        )
        if body.enabled is not None:
            endpoint = webhooks.set_enabled(session, webhook_id, body.enabled)
        return 200, WebhookOut(**webhooks.describe_endpoint(endpoint)), ""

    return write(request, caller, body, work)


@router.delete("/webhooks/{webhook_id}", response_model=WebhookOut, tags=["webhooks"])
def delete(webhook_id: Id, request: Request, caller: Writer) -> Response:
    """Remove an endpoint with its waiting events and its log."""

    def work(session: Session) -> tuple[int, WebhookOut, str]:
        out = WebhookOut(**webhooks.describe_endpoint(webhooks.get_endpoint(session, webhook_id)))
        webhooks.delete_endpoint(session, webhook_id)
        return 200, out, ""

    return write(request, caller, None, work)


@router.post(
    "/webhooks/{webhook_id}/test", status_code=202, response_model=WebhookTestOut, tags=["webhooks"]
)
def test(webhook_id: Id, request: Request, caller: Writer) -> Response:
    """Queue a `webhook.test` event for the endpoint; it is sent at the next scheduler
    tick, and its answer shows in `/deliveries`."""

    def work(session: Session) -> tuple[int, WebhookTestOut, str]:
        row = webhooks.send_test(session, webhook_id)
        message = "queued: sent at the next scheduler tick"
        return 202, WebhookTestOut(event_id=row.event_id, message=message), ""

    return write(request, caller, None, work)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=Page[WebhookAttemptOut],
    tags=["webhooks"],
)
def deliveries(
    webhook_id: Id,
    request: Request,
    caller: Reader,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    """Every attempt, newest first: event, status, duration, the answer's first 500
    characters (the cursor pages towards older attempts)."""
    rows = webhooks.list_attempts(session, webhook_id, decode_cursor(cursor), limit)
    items = [WebhookAttemptOut(**webhooks.describe_attempt(a, o)) for a, o in rows]
    return page(request, items, rows[-1][0].id if rows else None, limit)

"""Admin → Webhooks: endpoints (create shows the signing secret once), a test button,
enable/disable, and each endpoint's delivery log (status, duration, answer)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from newsletter.admin.common import (
    PREFIX,
    ReadSession,
    Viewer,
    console_of,
    needs,
    redirect,
    render,
    write,
)
from newsletter.admin.i18n import _
from newsletter.errors import InvalidInputError
from newsletter.events.outbox import EVENTS
from newsletter.services import webhooks

router = APIRouter()
# An admin page: endpoint URLs can carry a receiver's own key, so only those who may
# manage webhooks see them (the API's webhooks:read serves monitoring tools).
Reader = Annotated[Viewer, Depends(needs("webhooks:write"))]
Writer = Reader


def _page(
    request: Request,
    viewer: Viewer,
    session: Session,
    *,
    created: dict[str, str] | None = None,
    error: str = "",
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    endpoints = [webhooks.describe_endpoint(e) for e in webhooks.list_endpoints(session)]
    return render(
        request,
        "webhooks.html",
        viewer,
        title=_("Webhooks"),
        endpoints=endpoints,
        events=EVENTS,
        created=created,
        error=error,
        values=values or {"events": []},
        status=status,
    )


@router.get("/webhooks")
def webhooks_page(request: Request, viewer: Reader, session: ReadSession) -> Response:
    return _page(request, viewer, session)


@router.post("/webhooks")
async def create_webhook(request: Request, viewer: Writer) -> Response:
    form = await request.form()
    url = str(form.get("url") or "")[:2000]
    events = [str(e) for e in form.getlist("events")][:50]
    description = str(form.get("description") or "")[:500]
    settings = console_of(request).settings

    def work(session: Session) -> dict[str, str]:
        made = webhooks.create_endpoint(session, settings, url, events, description)
        return {"secret": made.secret, "url": made.endpoint.url}

    try:
        created = await run_in_threadpool(write, request, viewer, work)
    except InvalidInputError as exc:
        values = {"url": url, "events": events, "description": description}
        with console_of(request).sessions() as session:
            return _page(request, viewer, session, error=str(exc), values=values, status=422)
    with console_of(request).sessions() as session:
        return _page(request, viewer, session, created=created)


@router.post("/webhooks/{webhook_id}/test")
def test_webhook(webhook_id: int, request: Request, viewer: Writer) -> Response:
    write(request, viewer, lambda session: webhooks.send_test(session, webhook_id))
    return redirect(
        f"{PREFIX}/webhooks/{webhook_id}",
        _("Test event queued: it is sent at the next scheduler tick; reload to see the answer."),
    )


@router.post("/webhooks/{webhook_id}/enable")
def enable_webhook(webhook_id: int, request: Request, viewer: Writer) -> Response:
    write(request, viewer, lambda session: webhooks.set_enabled(session, webhook_id, True))
    return redirect(f"{PREFIX}/webhooks/{webhook_id}", _("Webhook enabled."))


@router.post("/webhooks/{webhook_id}/disable")
def disable_webhook(webhook_id: int, request: Request, viewer: Writer) -> Response:
    write(request, viewer, lambda session: webhooks.set_enabled(session, webhook_id, False))
    return redirect(f"{PREFIX}/webhooks/{webhook_id}", _("Webhook disabled."))


@router.post("/webhooks/{webhook_id}/delete")
def delete_webhook(webhook_id: int, request: Request, viewer: Writer) -> Response:
    write(request, viewer, lambda session: webhooks.delete_endpoint(session, webhook_id))
    return redirect(f"{PREFIX}/webhooks", _("Webhook deleted."))


@router.get("/webhooks/{webhook_id}")
def webhook_page(
    webhook_id: int, request: Request, viewer: Reader, session: ReadSession
) -> Response:
    endpoint = webhooks.describe_endpoint(webhooks.get_endpoint(session, webhook_id))
    attempts = [
        webhooks.describe_attempt(a, o) for a, o in webhooks.list_attempts(session, webhook_id)
    ]
    return render(
        request,
        "webhook.html",
        viewer,
        title=_("Webhook {url}").format(url=endpoint["url"]),
        endpoint=endpoint,
        attempts=attempts,
    )

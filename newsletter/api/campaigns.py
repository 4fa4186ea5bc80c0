"""Campaigns (compose, preview, test, schedule, pause, resume, cancel), their runs and
deliveries, stored templates and drip sequences."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.api.common import (
    ApiError,
    Caller,
    Id,
    IdQuery,
    ReadSession,
    api_of,
    check_if_match,
    decode_cursor,
    json_response,
    page,
    scoped,
    write,
)
from newsletter.api.schemas import (
    CampaignIn,
    CampaignOut,
    CampaignPatch,
    CampaignSummary,
    ContentIn,
    DeliveryOut,
    LinkIn,
    LinkOut,
    Page,
    PreviewOut,
    RunOut,
    ScheduledOut,
    ScheduleIn,
    SequenceIn,
    SequenceOut,
    TemplateIn,
    TemplateOut,
    TestSendIn,
    TestSendOut,
)
from newsletter.campaigns import control, service
from newsletter.campaigns.content import get_campaign
from newsletter.campaigns.models import Campaign, Template
from newsletter.campaigns.templates import (
    describe_template,
    get_template,
    list_templates,
    save_template,
    template_version,
)
from newsletter.delivery.previews import preview_for, send_test
from newsletter.errors import NotFoundError
from newsletter.runs.models import Run
from newsletter.runs.progress import find_deliveries, run_progress
from newsletter.sequences.service import (
    create_sequence,
    describe_sequence,
    get_sequence,
    list_sequences,
)
from newsletter.services import reports
from newsletter.tasks.status import run_name
from newsletter.tracking.links import correct_link, run_links

router = APIRouter()
Reader = Annotated[Caller, Depends(scoped("campaigns:read"))]
Writer = Annotated[Caller, Depends(scoped("campaigns:write"))]
Sender = Annotated[Caller, Depends(scoped("campaigns:send"))]
Pauser = Annotated[Caller, Depends(scoped("campaigns:pause"))]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=100)]


def _content(body: ContentIn) -> service.ContentSpec:
    return service.ContentSpec(
        slugs=tuple(body.articles or ()),
        latest=body.latest,
        series=body.series or "",
        since_last=body.since_last,
        tag=body.tag or "",
    )


def _out(session: Session, campaign: Campaign) -> CampaignOut:
    return CampaignOut(**service.describe_campaign(session, campaign))


def _own(caller: Caller, campaign: Campaign) -> None:
    caller.check_list_ids([ml.id for ml in campaign.lists], "campaign's lists")


@router.get("/campaigns", response_model=Page[CampaignSummary], tags=["campaigns"])
def list_campaigns(
    request: Request,
    caller: Reader,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    rows = service.list_campaigns(session, decode_cursor(cursor), limit)
    items = [
        CampaignSummary(
            id=c.id,
            name=c.name,
            status=c.status.value,
            send_at=c.send_at.isoformat() if c.send_at else None,
        )
        for c in rows
    ]
    return page(request, items, rows[-1].id if rows else None, limit)


@router.post("/campaigns", status_code=201, response_model=CampaignOut, tags=["campaigns"])
def create(body: CampaignIn, request: Request, caller: Writer) -> Response:
    """A draft campaign; lists, articles and template are checked now."""
    library = api_of(request).settings

    def work(session: Session) -> tuple[int, CampaignOut, str]:
        caller.check_lists(session, body.lists)
        from newsletter.rendering.library import template_library

        campaign = service.create_campaign(
            session,
            name=body.name,
            list_slugs=body.lists,
            subject=body.subject,
            content=_content(body.content),
            template=body.template,
            preheader=body.preheader,
            library=template_library(library.templates_dir),
            segment=body.segment,
        )
        if body.tracking is not None or body.track_opens is not None:
            service.set_campaign_tracking(session, campaign.id, body.tracking, body.track_opens)
        return 201, _out(session, campaign), f"/api/v1/campaigns/{campaign.id}"

    return write(request, caller, body, work)


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut, tags=["campaigns"])
def get_one(campaign_id: Id, caller: Reader, session: ReadSession) -> JSONResponse:
    """The campaign and the progress of its runs; its ETag goes in If-Match to edit it."""
    campaign = get_campaign(session, campaign_id)
    return json_response(_out(session, campaign), etag=service.campaign_version(campaign))


@router.patch("/campaigns/{campaign_id}", response_model=CampaignOut, tags=["campaigns"])
def update(campaign_id: Id, body: CampaignPatch, request: Request, caller: Writer) -> Response:
    """Change a draft. Needs If-Match with the ETag read, so two editors never
    overwrite each other (412 when it changed since)."""

    def work(session: Session) -> tuple[int, CampaignOut, str]:
        campaign = get_campaign(session, campaign_id)
        _own(caller, campaign)
        check_if_match(request, service.campaign_version(campaign))
        if body.lists is not None:
            caller.check_lists(session, body.lists)
        service.update_campaign(
            session,
            campaign_id,
            name=body.name,
            subject=body.subject,
            preheader=body.preheader,
            template=body.template,
            list_slugs=body.lists,
            content=_content(body.content) if body.content else None,
            segment=body.segment,
        )
        if body.tracking is not None or body.track_opens is not None:
            service.set_campaign_tracking(session, campaign_id, body.tracking, body.track_opens)
        return 200, _out(session, campaign), ""

    return write(request, caller, body, work)


@router.get("/campaigns/{campaign_id}/preview", response_model=PreviewOut, tags=["campaigns"])
def preview(
    campaign_id: Id,
    request: Request,
    caller: Reader,
    session: ReadSession,
    subscriber: Annotated[str | None, Query(max_length=320, description="an email")] = None,
) -> PreviewOut:
    """Subject, HTML and text as it would go out now, to this subscriber (or samples)."""
    shown = preview_for(session, campaign_id, api_of(request).settings, subscriber)
    return PreviewOut(subject=shown.subject, html=shown.html, text=shown.text)


@router.post("/campaigns/{campaign_id}/test", response_model=TestSendOut, tags=["campaigns"])
def test_send(campaign_id: Id, body: TestSendIn, request: Request, caller: Sender) -> Response:
    """Send one copy marked [Test] (nothing goes in the ledger)."""
    settings = api_of(request).settings

    def work(session: Session) -> tuple[int, TestSendOut, str]:
        _own(caller, get_campaign(session, campaign_id))
        reply = send_test(session, campaign_id, body.to, settings)
        return 200, TestSendOut(to=body.to, reply=reply), ""

    return write(request, caller, body, work)


@router.post("/campaigns/{campaign_id}/schedule", response_model=ScheduledOut, tags=["campaigns"])
def schedule(campaign_id: Id, body: ScheduleIn, request: Request, caller: Sender) -> Response:
    """Once (`at` in `timezone`, or `now`) or recurring (`cron`), optionally at the
    same wall-clock time in each subscriber's zone (`local_time`)."""

    def work(session: Session) -> tuple[int, ScheduledOut, str]:
        campaign = get_campaign(session, campaign_id)
        _own(caller, campaign)
        postal_address = api_of(request).settings.postal_address
        asked = service.ScheduleRequest(**body.model_dump(), postal_address=postal_address)
        message = service.schedule(session, campaign_id, asked)
        return 200, ScheduledOut(campaign=_out(session, campaign), message=message), ""

    return write(request, caller, body, work)


def _control(request: Request, caller: Caller, campaign_id: Id, change: control.Change) -> Response:
    def work(session: Session) -> tuple[int, CampaignOut, str]:
        _own(caller, get_campaign(session, campaign_id))
        return 200, _out(session, change(session, campaign_id)), ""

    return write(request, caller, None, work)


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut, tags=["campaigns"])
def pause(campaign_id: Id, request: Request, caller: Pauser) -> Response:
    """Workers stop within a second or two; resume continues where it stopped."""
    return _control(request, caller, campaign_id, control.pause_campaign)


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut, tags=["campaigns"])
def resume(campaign_id: Id, request: Request, caller: Sender) -> Response:
    return _control(request, caller, campaign_id, control.resume_campaign)


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut, tags=["campaigns"])
def cancel(campaign_id: Id, request: Request, caller: Sender) -> Response:
    """Stop for good; what was sent stays recorded."""
    return _control(request, caller, campaign_id, control.cancel_campaign)


@router.get("/campaigns/{campaign_id}/runs", response_model=Page[RunOut], tags=["runs"])
def campaign_runs(campaign_id: Id, caller: Reader, session: ReadSession) -> JSONResponse:
    campaign = get_campaign(session, campaign_id)
    items = [RunOut(**run_progress(session, run, campaign.name).as_json()) for run in campaign.runs]
    return JSONResponse(Page[RunOut](items=items).model_dump(mode="json"))


@router.get("/runs/{run_id}", response_model=RunOut, tags=["runs"])
def get_run(run_id: Id, caller: Reader, session: ReadSession) -> RunOut:
    """How far a run has got: counts by status, rate, ETA."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    return RunOut(**run_progress(session, run, run_name(session, run)).as_json())


@router.get("/deliveries", response_model=Page[DeliveryOut], tags=["deliveries"])
def deliveries(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("deliveries:read"))],
    session: ReadSession,
    run: IdQuery = None,
    campaign: IdQuery = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    status: Annotated[
        str | None,
        Query(pattern="^(pending|sending|sent|deferred|failed|suppressed|cancelled)$"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    """The ledger: who got what, with status, attempts and the server's last reply.
    "Did Alice get it?": `?campaign=12&email=alice@example.org`."""
    rows = find_deliveries(
        session,
        run_id=run,
        campaign_id=campaign,
        email=email,
        status=status,
        after_id=decode_cursor(cursor),
        limit=limit,
    )
    items = [DeliveryOut(**row) for row in rows]
    return page(request, items, rows[-1]["id"] if rows else None, limit)


@router.get("/templates", response_model=Page[TemplateOut], tags=["templates"])
def templates(
    caller: Annotated[Caller, Depends(scoped("templates:read"))], session: ReadSession
) -> JSONResponse:
    items = [TemplateOut(**describe_template(t)) for t in list_templates(session)]
    return JSONResponse(Page[TemplateOut](items=items).model_dump(mode="json"))


@router.get("/templates/{name}", response_model=TemplateOut, tags=["templates"])
def template(
    name: str, caller: Annotated[Caller, Depends(scoped("templates:read"))], session: ReadSession
) -> JSONResponse:
    """A template with its sources; its ETag goes in If-Match to replace it."""
    found = get_template(session, name)
    out = TemplateOut(**describe_template(found, with_source=True))
    return json_response(out, etag=template_version(found))


@router.put("/templates/{name}", response_model=TemplateOut, tags=["templates"])
def put_template(
    name: str,
    body: TemplateIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("templates:write"))],
) -> Response:
    """Create or replace a template once the sandbox renders it (errors name the part
    and line). Replacing needs If-Match with the ETag read (412 when it changed)."""

    def work(session: Session) -> tuple[int, TemplateOut, str]:
        existing = session.scalar(select(Template).where(Template.name == name))
        if existing is not None:
            check_if_match(request, template_version(existing))
        saved = save_template(session, name, body.subject, body.html, body.text)
        session.flush()
        out = TemplateOut(**describe_template(saved, with_source=True))
        return (200 if existing else 201), out, f"/api/v1/templates/{name}"

    return write(request, caller, body, work)


@router.get("/sequences", response_model=Page[SequenceOut], tags=["sequences"])
def sequences(
    caller: Annotated[Caller, Depends(scoped("sequences:read"))], session: ReadSession
) -> JSONResponse:
    items = [SequenceOut(**describe_sequence(session, s)) for s in list_sequences(session)]
    return JSONResponse(Page[SequenceOut](items=items).model_dump(mode="json"))


@router.post("/sequences", status_code=201, response_model=SequenceOut, tags=["sequences"])
def new_sequence(
    body: SequenceIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("sequences:write"))],
) -> Response:
    """Send a series to a list's members one article at a time (`every` or `cron`)."""

    def work(session: Session) -> tuple[int, SequenceOut, str]:
        caller.check_lists(session, [body.list_slug])
        made = create_sequence(
            session,
            series_slug=body.series,
            list_slug=body.list_slug,
            every=body.every,
            cron=body.cron,
            timezone=body.timezone,
            initial_delay=body.delay,
            restart_on_rejoin=body.restart_on_rejoin,
            segment=body.segment,
        )
        return 201, SequenceOut(**describe_sequence(session, made)), f"/api/v1/sequences/{made.id}"

    return write(request, caller, body, work)


@router.get("/sequences/{sequence_id}", response_model=SequenceOut, tags=["sequences"])
def sequence(
    sequence_id: Id,
    caller: Annotated[Caller, Depends(scoped("sequences:read"))],
    session: ReadSession,
) -> SequenceOut:
    return SequenceOut(**describe_sequence(session, get_sequence(session, sequence_id)))


@router.get("/campaigns/{campaign_id}/report", response_model=dict[str, Any], tags=["reports"])
def report(
    campaign_id: Id,
    caller: Annotated[Caller, Depends(scoped("reports:read"))],
    session: ReadSession,
    run: IdQuery = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Results of the campaign's latest run (or `run`): delivered, bounced, complaints,
    unsubscribes; opens and clicks unique and total, human and machine; per link, per
    list, over time; its other runs. The same numbers as `newsletter campaigns report`.
    `format=csv`: rows of section, item, measure, value."""
    data = reports.campaign_report(session, campaign_id, run)
    if format == "csv":
        return Response(reports.report_csv(data), media_type="text/csv; charset=utf-8")
    return JSONResponse(data)


@router.get(
    "/campaigns/{campaign_id}/report/who-clicked",
    response_model=list[dict[str, Any]],
    tags=["reports"],
)
def who_clicked(
    campaign_id: Id,
    caller: Annotated[Caller, Depends(scoped("reports:read"))],
    session: ReadSession,
    run: IdQuery = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
) -> Response:
    """Readers who clicked (human clicks, individual-mode lists only: anonymous runs
    list nobody), with their first click and the link positions; also needs
    subscribers:read."""
    caller.require("subscribers:read")
    data = reports.campaign_report(session, campaign_id, run)
    rows = reports.who_clicked(session, data["run"]["id"]) if data["run"] else []
    if format == "csv":
        return Response(reports.who_clicked_csv(rows), media_type="text/csv; charset=utf-8")
    return JSONResponse(rows)


@router.get("/sequences/{sequence_id}/report", response_model=dict[str, Any], tags=["reports"])
def sequence_report(
    sequence_id: Id,
    caller: Annotated[Caller, Depends(scoped("reports:read"))],
    session: ReadSession,
) -> JSONResponse:
    """The drip funnel: per step, sent → opened → clicked (people only) → sent the
    next step (`newsletter sequences report`)."""
    return JSONResponse(reports.sequence_funnel(session, sequence_id))


@router.get("/runs/{run_id}/links", response_model=list[LinkOut], tags=["runs"])
def links(run_id: Id, caller: Reader, session: ReadSession) -> list[LinkOut]:
    """The run's tracked links, by position in its email."""
    return [
        LinkOut(position=link.position, url=link.url, destination=link.destination)
        for link in run_links(session, run_id)
    ]


@router.put("/runs/{run_id}/links/{position}", response_model=LinkOut, tags=["runs"])
def correct(
    run_id: Id,
    position: Annotated[int, Path(ge=1, le=100_000)],
    body: LinkIn,
    request: Request,
    caller: Writer,
) -> Response:
    """Send later clicks on this link elsewhere (a broken link fixed after sending)."""

    def work(session: Session) -> tuple[int, LinkOut, str]:
        link = correct_link(session, run_id, position, body.destination)
        return 200, LinkOut(position=link.position, url=link.url, destination=link.destination), ""

    return write(request, caller, body, work)


__all__ = ["ApiError", "router"]

"""Campaigns: the list, the composer with its live preview, checks and test sends,
scheduling behind a confirmation that counts the recipients, pause/resume/cancel,
and the campaign page with live progress and "did Alice get it?"."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict

from newsletter.admin.common import (
    PREFIX,
    PREVIEW_CSP,
    ReadSession,
    Viewer,
    console_of,
    is_htmx,
    list_named,
    needs,
    redirect,
    render,
    write,
)
from newsletter.admin.i18n import _
from newsletter.admin.segments import composer_rules
from newsletter.audience.addresses import normalise_email
from newsletter.audience.lists import list_lists, require_postal_address
from newsletter.campaigns import control, service
from newsletter.campaigns.content import get_campaign
from newsletter.campaigns.models import Campaign, CampaignStatus, ContentKind
from newsletter.campaigns.templates import list_templates
from newsletter.content.editing import list_articles, list_series
from newsletter.db import utcnow
from newsletter.delivery.linkcheck import check_email
from newsletter.delivery.previews import preview_for, send_test
from newsletter.errors import InvalidInputError, NewsletterError
from newsletter.recurrence import next_occurrence
from newsletter.rendering.library import template_library
from newsletter.runs.progress import find_deliveries, run_progress
from newsletter.services.segments import (
    campaign_recipients,
    choose_campaign_segment,
    describe_segment,
    list_segments,
)

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("campaigns:read"))]
Writer = Annotated[Viewer, Depends(needs("campaigns:write"))]
Sender = Annotated[Viewer, Depends(needs("campaigns:send"))]
Pauser = Annotated[Viewer, Depends(needs("campaigns:pause"))]
BUILTIN_TEMPLATES = ("digest", "article")
MAX_TEST_ADDRESSES = 5
ZONES = sorted(available_timezones())
# What each composer field is called in the form (and in the preview's query string).
DRAFT_FIELDS = ("name", "subject", "preheader", "template", "kind", "latest", "series", "tag")


def _settings(request: Request) -> Any:
    return request.app.state.console.settings


def _own(viewer: Viewer, campaign: Campaign) -> None:
    viewer.require_lists([ml.id for ml in campaign.lists])


# --- the list ---------------------------------------------------------------------------


@router.get("/campaigns")
def campaigns(
    request: Request,
    viewer: Reader,
    session: ReadSession,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    chosen = CampaignStatus(status) if status and status in CampaignStatus.__members__ else None
    rows = service.list_campaigns(session, status=chosen)
    return render(
        request,
        "campaigns.html",
        viewer,
        title=_("Campaigns"),
        campaigns=list(reversed(rows)),
        statuses=[s.value for s in CampaignStatus],
        chosen=chosen.value if chosen else "",
    )


# --- composing --------------------------------------------------------------------------


def _choices(session: Session, viewer: Viewer) -> dict[str, Any]:
    lists = [
        (ml, count)
        for ml, count in list_lists(session)
        if viewer.list_ids is None or ml.id in viewer.list_ids
    ]
    stored = [t.name for t in list_templates(session)]
    return {
        "segments": list_segments(session) if viewer.may("segments:read") else [],
        "lists": lists,
        "articles": [a for a in list_articles(session) if a.published_at is not None],
        "series": list_series(session),
        "templates": [*BUILTIN_TEMPLATES, *stored],
    }


def _content_from(data: ImmutableMultiDict[str, Any]) -> service.ContentSpec:
    kind = str(data.get("kind") or "latest")
    number = str(data.get("latest") or "").strip()
    if kind in ("latest", "since_last", "tag") and number and not number.isdigit():
        raise InvalidInputError(_("Latest: give a whole number of articles, e.g. 5."))
    latest = int(number) if number.isdigit() else 0
    if kind == "articles":
        slugs = tuple(str(s) for s in data.getlist("articles"))
        if not slugs:
            raise InvalidInputError(_("Articles: pick at least one article."))
        return service.ContentSpec(slugs=slugs)
    if kind == "series":
        series = str(data.get("series") or "")
        if not series:
            raise InvalidInputError(_("Series: choose the series to send."))
        return service.ContentSpec(series=series)
    if kind == "since_last":
        return service.ContentSpec(since_last=True, latest=latest)
    if kind == "tag":
        tag = str(data.get("tag") or "").strip()
        if not tag:
            raise InvalidInputError(_("Tag: give the tag of the articles to send."))
        return service.ContentSpec(tag=tag, latest=latest)
    return service.ContentSpec(latest=latest or 5)


def _planned_from(data: ImmutableMultiDict[str, Any]) -> datetime | None:
    value = str(data.get("planned") or "").strip()
    if not value:
        return None
    try:
        return service.parse_local_time(value, str(data.get("planned_zone") or "UTC"))
    except InvalidInputError as exc:
        message = _("Planned for: give a date and time such as 2026-12-07T09:00.")
        raise InvalidInputError(message) from exc


def _edits_from(data: ImmutableMultiDict[str, Any]) -> dict[str, Any]:
    """The composer's fields as the arguments of `update_campaign`."""
    return {
        "name": str(data.get("name") or ""),
        "subject": str(data.get("subject") or ""),
        "preheader": str(data.get("preheader") or ""),
        "template": str(data.get("template") or "digest"),
        "list_slugs": [str(s) for s in data.getlist("lists")],
        "content": _content_from(data),
        "planned_at": _planned_from(data),
    }


def _draft_values(campaign: Campaign | None) -> dict[str, Any]:
    """The composer's fields filled from a saved campaign (or empty)."""
    if campaign is None:
        return {"kind": "latest", "latest": "5", "template": "digest", "lists": [], "articles": []}
    args = campaign.content_args
    return {
        "name": campaign.name,
        "subject": campaign.subject,
        "preheader": campaign.preheader,
        "template": campaign.template,
        "kind": campaign.content_kind.value,
        "latest": str(args.get("count", "")),
        "series": args.get("series", ""),
        "tag": args.get("tag", ""),
        "articles": list(args.get("slugs", [])),
        "lists": [ml.slug for ml in campaign.lists],
        "planned": (
            campaign.send_at.strftime("%Y-%m-%dT%H:%M")
            if campaign.send_at and campaign.status is CampaignStatus.draft
            else ""
        ),
    }


def _form_values(data: ImmutableMultiDict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {k: str(data.get(k) or "") for k in (*DRAFT_FIELDS, "planned")}
    values["lists"] = [str(s) for s in data.getlist("lists")]
    values["articles"] = [str(s) for s in data.getlist("articles")]
    values["segment"] = str(data.get("segment") or "")
    values["segment_rules"] = str(data.get("segment_rules") or "")
    values["seg_match"] = str(data.get("seg_match") or "all")
    values["seg_rows"] = _rows_of(data)
    return values


SEGMENT_ROWS = 3


def _rows_of(data: ImmutableMultiDict[str, Any]) -> list[tuple[str, str, str]]:
    """The rule rows as posted (always SEGMENT_ROWS of them, empty ones included)."""
    fields, ops, texts = (
        [str(v) for v in data.getlist(name)] for name in ("seg_field", "seg_op", "seg_value")
    )
    rows = list(zip(fields, ops, texts, strict=False))[:SEGMENT_ROWS]
    return rows + [("", "=", "")] * (SEGMENT_ROWS - len(rows))


def _segment_values(session: Session, campaign: Campaign | None, values: dict[str, Any]) -> None:
    """The composer's segment fields of a saved draft: its saved segment, or the rules
    of its own segment (made from rules typed in the composer) as one line."""
    values.setdefault("seg_match", "all")
    values.setdefault("seg_rows", [("", "=", "")] * SEGMENT_ROWS)
    if campaign is None or "segment" in values:
        return
    values["segment"], values["segment_rules"] = "", ""
    slug = service.segment_slug(session, campaign)
    if slug == f"campaign-{campaign.id}":
        segment = next(s for s in list_segments(session) if s.slug == slug)
        values["segment_rules"] = describe_segment(session, segment)["line"]
    elif slug:
        values["segment"] = slug


def _choose_segment(
    session: Session, viewer: Viewer, campaign_id: int, data: ImmutableMultiDict[str, Any]
) -> None:
    """Apply the composer's segment fields (rules typed in, or built in the rule rows,
    make a saved segment of the campaign's own)."""
    slug = str(data.get("segment") or "").strip()
    rules = composer_rules(data)
    if rules:
        viewer.require("segments:write")
    choose_campaign_segment(session, campaign_id, slug, rules or "")


def _composer(
    request: Request,
    viewer: Viewer,
    session: Session,
    campaign: Campaign | None,
    values: dict[str, Any],
    *,
    error: str = "",
    status: int = 200,
) -> Response:
    _segment_values(session, campaign, values)
    return render(
        request,
        "composer.html",
        viewer,
        title=_("Edit “{name}”").format(name=campaign.name) if campaign else _("New campaign"),
        campaign=campaign,
        values=values,
        error=error,
        status=status,
        kinds=[k.value for k in ContentKind],
        **_choices(session, viewer),
    )


@router.get("/campaigns/new")
def new_campaign(request: Request, viewer: Writer, session: ReadSession) -> Response:
    return _composer(request, viewer, session, None, _draft_values(None))


@router.post("/campaigns/new")
async def create_campaign(request: Request, viewer: Writer) -> Response:
    data = await request.form()
    return await run_in_threadpool(_create, request, viewer, data)


def _create(request: Request, viewer: Viewer, data: ImmutableMultiDict[str, Any]) -> Response:
    library = template_library(_settings(request).templates_dir)

    def work(db: Session) -> int:
        edits = _edits_from(data)
        _check_lists(db, viewer, edits["list_slugs"])
        campaign = service.create_campaign(
            db,
            name=edits["name"],
            list_slugs=edits["list_slugs"],
            subject=edits["subject"],
            content=edits["content"],
            template=edits["template"],
            preheader=edits["preheader"],
            library=library,
        )
        if edits["planned_at"] is not None:
            service.update_campaign(
                db, campaign.id, planned_at=edits["planned_at"], library=library
            )
        _choose_segment(db, viewer, campaign.id, data)
        return campaign.id

    try:
        campaign_id = write(request, viewer, work)
    except InvalidInputError as exc:
        with console_of(request).sessions() as session:
            return _composer(
                request, viewer, session, None, _form_values(data), error=str(exc), status=422
            )
    return redirect(f"{PREFIX}/campaigns/{campaign_id}/edit", _("Draft saved."))


def _check_lists(session: Session, viewer: Viewer, slugs: list[str]) -> None:
    viewer.require_lists([list_named(session, slug).id for slug in slugs])


@router.get("/campaigns/{campaign_id}/edit")
def edit_campaign(
    campaign_id: int, request: Request, viewer: Reader, session: ReadSession
) -> Response:
    campaign = get_campaign(session, campaign_id)
    return _composer(request, viewer, session, campaign, _draft_values(campaign))


@router.post("/campaigns/{campaign_id}/edit")
async def save_campaign(campaign_id: int, request: Request, viewer: Writer) -> Response:
    data = await request.form()
    return await run_in_threadpool(_save, campaign_id, request, viewer, data)


def _save(
    campaign_id: int, request: Request, viewer: Viewer, data: ImmutableMultiDict[str, Any]
) -> Response:
    library = template_library(_settings(request).templates_dir)

    def work(db: Session) -> None:
        _own(viewer, get_campaign(db, campaign_id))
        edits = _edits_from(data)
        _check_lists(db, viewer, edits["list_slugs"])
        service.update_campaign(db, campaign_id, library=library, **edits)
        _choose_segment(db, viewer, campaign_id, data)

    try:
        write(request, viewer, work)
    except InvalidInputError as exc:
        with console_of(request).sessions() as session:
            campaign = get_campaign(session, campaign_id)
            return _composer(
                request, viewer, session, campaign, _form_values(data), error=str(exc), status=422
            )
    return redirect(f"{PREFIX}/campaigns/{campaign_id}/edit", _("Draft saved."))


# --- preview ----------------------------------------------------------------------------


def _preview_changes(
    campaign: Campaign, query: ImmutableMultiDict[str, str]
) -> dict[str, Any] | None:
    """Unsaved edits of a draft given in the query string (the composer's fields)."""
    if campaign.status is not CampaignStatus.draft or "subject" not in query:
        return None
    return _edits_from(query)


@router.get("/campaigns/{campaign_id}/preview")
def preview(campaign_id: int, request: Request, viewer: Reader, session: ReadSession) -> Response:
    """The preview pane: subject, the email at 600 and 375 px, the text part, and
    the size; with the composer's fields in the query, the unsaved draft."""
    campaign = get_campaign(session, campaign_id)
    query = request.query_params
    subscriber = str(query.get("as") or "").strip() or None
    error, shown, check = "", None, None
    try:
        shown = preview_for(
            session,
            campaign_id,
            _settings(request),
            subscriber,
            _preview_changes(campaign, query),
        )
        check = check_email(shown.html, follow=False)
    except NewsletterError as exc:
        error = str(exc)
    frame_query = request.url.query
    template = "campaign_preview.html" if is_htmx(request) else "campaign_preview_page.html"
    return render(
        request,
        template,
        viewer,
        title=_("Preview of “{name}”").format(name=campaign.name),
        campaign=campaign,
        shown=shown,
        check=check,
        error=error,
        frame_query=frame_query,
        subscriber=subscriber or "",
    )


@router.get("/campaigns/{campaign_id}/preview.html")
def preview_document(
    campaign_id: int, request: Request, viewer: Reader, session: ReadSession
) -> Response:
    """The email alone, for the preview frames: its own inline styles and images, no
    script of any kind, sandboxed, framed only by the console."""
    campaign = get_campaign(session, campaign_id)
    query = request.query_params
    part = query.get("part", "html")
    try:
        shown = preview_for(
            session,
            campaign_id,
            _settings(request),
            str(query.get("as") or "").strip() or None,
            _preview_changes(campaign, query),
        )
    except NewsletterError as exc:
        return Response(str(exc), status_code=422, media_type="text/plain")
    headers = {"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"}
    if part == "text":
        return Response(shown.text, media_type="text/plain; charset=utf-8", headers=headers)
    return HTMLResponse(shown.html, headers=headers)


@router.get("/campaigns/{campaign_id}/check")
def check_links(
    campaign_id: int, request: Request, viewer: Reader, session: ReadSession
) -> Response:
    """Every link of the email fetched once; the unsubscribe link; the size."""
    campaign = get_campaign(session, campaign_id)
    settings = _settings(request)
    shown = preview_for(session, campaign_id, settings)
    check = check_email(shown.html, allow_private=settings.allow_private_urls)
    template = "campaign_check.html" if is_htmx(request) else "campaign_check_page.html"
    return render(
        request,
        template,
        viewer,
        title=_("Link check of “{name}”").format(name=campaign.name),
        campaign=campaign,
        check=check,
    )


# --- test sends -------------------------------------------------------------------------


@router.post("/campaigns/{campaign_id}/test")
def test_send(
    campaign_id: int,
    request: Request,
    viewer: Sender,
    to: Annotated[str, Form(max_length=2000)],
) -> Response:
    """One copy marked [Test] to each address (up to five); nothing enters the ledger."""
    addresses = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    if not addresses or len(addresses) > MAX_TEST_ADDRESSES:
        raise InvalidInputError(
            _("Give one to {n} addresses, separated by commas.").format(n=MAX_TEST_ADDRESSES)
        )
    settings = _settings(request)

    def work(session: Session) -> list[str]:
        _own(viewer, get_campaign(session, campaign_id))
        checked = [_test_address(a) for a in addresses]
        return [f"{a}: {send_test(session, campaign_id, a, settings)}" for a in checked]

    replies = write(request, viewer, work)
    notice = _("Test sent. The server answered: {replies}").format(replies="; ".join(replies))
    return redirect(f"{PREFIX}/campaigns/{campaign_id}", notice)


def _test_address(address: str) -> str:
    """The address canonical, or an error that says which one of the field is wrong."""
    try:
        return normalise_email(address)
    except InvalidInputError as exc:
        shown = address if len(address) <= 80 else address[:80] + "…"
        raise InvalidInputError(
            _("To: “{address}”: {reason}.").format(address=shown, reason=exc)
        ) from exc


# --- scheduling -------------------------------------------------------------------------


def _schedule_request(
    request: Request, mode: str, at: str, timezone: str, cron: str, local_time: bool
) -> service.ScheduleRequest:
    postal = _settings(request).postal_address
    if mode == "now":
        return service.ScheduleRequest(now=True, postal_address=postal)
    if mode == "cron":
        return service.ScheduleRequest(
            cron=cron.strip(),
            timezone=timezone,
            at=at or None,
            local_time=local_time,
            postal_address=postal,
        )
    if mode in ("at", "local"):
        if not at:
            raise InvalidInputError(_("When: give a date and time."))
        return service.ScheduleRequest(
            at=at, timezone=timezone, local_time=mode == "local", postal_address=postal
        )
    raise InvalidInputError(_("Choose when: now, at a time, by cron, or each reader's time."))


def _check_postal_address(campaign: Campaign, postal_address: str) -> None:
    """Scheduling's own check (every email shows a postal address), worded for the
    console: the lists by their names, and where staff see the setting."""
    try:
        require_postal_address(campaign.lists, postal_address)
    except InvalidInputError:
        missing = ", ".join(f"“{ml.name}”" for ml in campaign.lists if not ml.postal_address)
        raise InvalidInputError(
            _(
                "Every campaign email shows the sender's postal address (US CAN-SPAM), and "
                "neither the list {lists} nor the server has one: whoever runs the server "
                "sets NEWSLETTER_POSTAL_ADDRESS (the Settings page shows it)."
            ).format(lists=missing)
        ) from None


def _when_it_goes(campaign: Campaign, mode: str) -> str:
    """When the campaign, scheduled as asked but not yet confirmed, would be sent."""
    send_at = campaign.send_at or utcnow()
    if campaign.cron:
        first = next_occurrence(campaign.cron, campaign.timezone, send_at)
        sentence = _("It will be sent every time “{cron}” falls due in {zone}, first at {first}.")
        return sentence.format(
            cron=campaign.cron, zone=campaign.timezone, first=f"{first:%Y-%m-%d %H:%M} UTC"
        )
    if campaign.local_time:
        wall = send_at.astimezone(ZoneInfo(campaign.timezone))
        return _("It will be sent at {time} on {day} in each reader's own time zone.").format(
            time=f"{wall:%H:%M}", day=f"{wall:%Y-%m-%d}"
        )
    if mode == "now":
        return _("It will be sent at once, when you confirm.")
    when = f"{send_at:%Y-%m-%d %H:%M} UTC"
    if campaign.timezone and campaign.timezone != "UTC":
        local = send_at.astimezone(ZoneInfo(campaign.timezone))
        when += f" ({local:%H:%M} in {campaign.timezone})"
    return _("It will be sent at {when}.").format(when=when)


Mode = Annotated[str, Form(max_length=10)]
When = Annotated[str, Form(max_length=40)]
Zone = Annotated[str, Form(max_length=64)]
Cron = Annotated[str, Form(max_length=100)]


@router.get("/campaigns/{campaign_id}/schedule")
def schedule_form(
    campaign_id: int, request: Request, viewer: Sender, session: ReadSession
) -> Response:
    campaign = get_campaign(session, campaign_id)
    return render(
        request,
        "schedule.html",
        viewer,
        title=_("Schedule “{name}”").format(name=campaign.name),
        campaign=campaign,
        zones=ZONES,
        values={"mode": "now", "timezone": campaign.timezone or "UTC"},
    )


@router.post("/campaigns/{campaign_id}/schedule/confirm")
def confirm_schedule(
    campaign_id: int,
    request: Request,
    viewer: Sender,
    session: ReadSession,
    mode: Mode = "",
    at: When = "",
    timezone: Zone = "UTC",
    cron: Cron = "",
) -> Response:
    """What would happen, exactly: when, and how many people (after suppressions).
    Nothing is scheduled until the confirmation is sent."""
    campaign = get_campaign(session, campaign_id)
    values = {"mode": mode, "at": at, "timezone": timezone, "cron": cron}
    asked = None
    try:
        asked = _schedule_request(request, mode, at, timezone, cron, mode == "local")
        _check_postal_address(campaign, asked.postal_address)
        # Checked as scheduling checks it, then undone: the sentence says when.
        savepoint = session.begin_nested()
        try:
            service.schedule(session, campaign_id, asked)
            when = _when_it_goes(get_campaign(session, campaign_id), mode)
        finally:
            savepoint.rollback()
    except InvalidInputError as exc:
        return render(
            request,
            "schedule.html",
            viewer,
            title=_("Schedule “{name}”").format(name=campaign.name),
            campaign=campaign,
            zones=ZONES,
            values=values,
            error=str(exc),
            status=422,
        )
    count = campaign_recipients(session, campaign_id)
    # A one-off time already gone is sent at the next tick: say so before it is.
    past = mode == "at" and service.parse_local_time(at, timezone) < utcnow()
    return render(
        request,
        "schedule_confirm.html",
        viewer,
        title=_("Confirm: schedule “{name}”").format(name=campaign.name),
        campaign=get_campaign(session, campaign_id),
        values=values,
        when=when,
        count=count,
        past=past,
    )


@router.post("/campaigns/{campaign_id}/schedule")
def schedule(
    campaign_id: int,
    request: Request,
    viewer: Sender,
    mode: Mode = "",
    at: When = "",
    timezone: Zone = "UTC",
    cron: Cron = "",
) -> Response:
    asked = _schedule_request(request, mode, at, timezone, cron, mode == "local")

    def work(session: Session) -> str:
        campaign = get_campaign(session, campaign_id)
        _own(viewer, campaign)
        _check_postal_address(campaign, asked.postal_address)
        return service.schedule(session, campaign_id, asked)

    return redirect(f"{PREFIX}/campaigns/{campaign_id}", write(request, viewer, work))


def _control(
    request: Request, viewer: Viewer, campaign_id: int, change: control.Change, done: str
) -> Response:
    def work(session: Session) -> None:
        _own(viewer, get_campaign(session, campaign_id))
        change(session, campaign_id)

    write(request, viewer, work)
    return redirect(f"{PREFIX}/campaigns/{campaign_id}", done)


@router.post("/campaigns/{campaign_id}/pause")
def pause(campaign_id: int, request: Request, viewer: Pauser) -> Response:
    return _control(request, viewer, campaign_id, control.pause_campaign, _("Paused."))


@router.post("/campaigns/{campaign_id}/resume")
def resume(campaign_id: int, request: Request, viewer: Sender) -> Response:
    return _control(request, viewer, campaign_id, control.resume_campaign, _("Resumed."))


@router.post("/campaigns/{campaign_id}/cancel")
def cancel(campaign_id: int, request: Request, viewer: Sender) -> Response:
    return _control(request, viewer, campaign_id, control.cancel_campaign, _("Cancelled."))


# --- the campaign page ------------------------------------------------------------------


def _progress(session: Session, campaign: Campaign) -> list[Any]:
    return [run_progress(session, run, campaign.name) for run in reversed(campaign.runs)]


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    campaign_id: int, request: Request, viewer: Reader, session: ReadSession
) -> Response:
    campaign = get_campaign(session, campaign_id)
    runs = _progress(session, campaign)
    if is_htmx(request) and request.query_params.get("part") == "progress":
        return render(
            request, "campaign_progress.html", viewer, title="", campaign=campaign, runs=runs
        )
    return render(
        request,
        "campaign.html",
        viewer,
        title=_("Campaign “{name}”").format(name=campaign.name),
        campaign=campaign,
        runs=runs,
        articles=service.describe_campaign(session, campaign)["articles"],
        lookup=None,
        email="",
    )


@router.get("/campaigns/{campaign_id}/lookup")
def lookup(
    campaign_id: int,
    request: Request,
    viewer: Annotated[Viewer, Depends(needs("deliveries:read"))],
    session: ReadSession,
    email: Annotated[str, Query(max_length=320)] = "",
) -> Response:
    """Did this person get it? Every ledger row of theirs for the campaign's runs:
    status, attempts, the mail server's last reply, when."""
    campaign = get_campaign(session, campaign_id)
    address, error = "", ""
    try:
        address = normalise_email(email)
    except InvalidInputError as exc:
        error = str(exc)
    rows = (
        find_deliveries(session, campaign_id=campaign_id, email=address, limit=100)
        if address
        else []
    )
    context: dict[str, Any] = {"campaign": campaign, "lookup": rows, "email": email, "error": error}
    if is_htmx(request):
        return render(request, "campaign_lookup.html", viewer, title="", **context)
    return render(
        request,
        "campaign.html",
        viewer,
        title=_("Campaign “{name}”").format(name=campaign.name),
        runs=_progress(session, campaign),
        articles=service.describe_campaign(session, campaign)["articles"],
        **context,
    )

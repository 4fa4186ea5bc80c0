"""Lists, subscribers, CSV imports, suppressions and bounces."""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.api.common import (
    ApiError,
    Caller,
    Id,
    ReadSession,
    audited,
    decode_cursor,
    page,
    scoped,
    write,
)
from newsletter.api.schemas import (
    BounceOut,
    BulkIn,
    EmailIn,
    ForgetOut,
    ImportJobOut,
    ImportReportOut,
    ListIn,
    ListOut,
    Page,
    SubscriberOut,
    SuppressionIn,
    SuppressionOut,
    TrackingIn,
    TrackingOut,
)
from newsletter.audience import importer, subscribers
from newsletter.audience.addresses import normalise_email
from newsletter.audience.lists import create_list, get_list
from newsletter.audience.models import (
    BounceEvent,
    MailingList,
    OptIn,
    Subscription,
    SubscriptionStatus,
    Suppression,
    TrackingMode,
)
from newsletter.audience.subscriptions import suppress_address
from newsletter.services import data_rights
from newsletter.services.preferences import set_tracking

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=100)]
MAX_CSV = 20_000_000


def _list_out(ml: MailingList, confirmed: int) -> ListOut:
    return ListOut(
        id=ml.id,
        slug=ml.slug,
        name=ml.name,
        opt_in=ml.opt_in.value,
        description=ml.description,
        confirmed=confirmed,
        tracking=ml.tracking.value,
        track_opens=ml.track_opens,
    )


def _confirmed(session: Session, list_id: Id) -> int:
    return (
        session.scalar(
            select(func.count(Subscription.id)).where(
                Subscription.list_id == list_id, Subscription.status == SubscriptionStatus.confirmed
            )
        )
        or 0
    )


@router.get("/lists", response_model=Page[ListOut], tags=["lists"])
def list_lists(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("lists:read"))],
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    query = select(MailingList).where(MailingList.id > decode_cursor(cursor))
    if caller.list_ids is not None:
        query = query.where(MailingList.id.in_(caller.list_ids))
    rows = list(session.scalars(query.order_by(MailingList.id).limit(limit)))
    items = [_list_out(ml, _confirmed(session, ml.id)) for ml in rows]
    return page(request, items, rows[-1].id if rows else None, limit)


@router.post("/lists", status_code=201, response_model=ListOut, tags=["lists"])
def create(
    body: ListIn, request: Request, caller: Annotated[Caller, Depends(scoped("lists:write"))]
) -> Response:
    def work(session: Session) -> tuple[int, ListOut, str]:
        ml = create_list(
            session,
            body.slug,
            body.name,
            OptIn(body.opt_in),
            body.description,
            tracking=TrackingMode(body.tracking),
            track_opens=body.track_opens,
        )
        return 201, _list_out(ml, 0), f"/api/v1/lists/{ml.slug}"

    return write(request, caller, body, work)


@router.get("/lists/{slug}", response_model=ListOut, tags=["lists"])
def get_one(
    slug: str, caller: Annotated[Caller, Depends(scoped("lists:read"))], session: ReadSession
) -> ListOut:
    ml = get_list(session, slug)
    caller.check_list_ids([ml.id])
    return _list_out(ml, _confirmed(session, ml.id))


@router.get(
    "/lists/{slug}/export",
    tags=["lists"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def export_list(
    slug: str, request: Request, caller: Annotated[Caller, Depends(scoped("subscribers:read"))]
) -> Response:
    """Every member of the list, whatever their status, as CSV (see `subscribers export`)."""
    out = io.StringIO()

    def export(session: Session) -> int:
        caller.check_list_ids([get_list(session, slug).id])
        return data_rights.export_list_csv(session, slug, out)

    audited(request, caller, export)  # exports hold personal data: logged
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{slug}.csv"'},
    )


@router.get("/subscribers", response_model=Page[SubscriberOut], tags=["subscribers"])
def search(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:read"))],
    session: ReadSession,
    email: Annotated[str | None, Query(max_length=320)] = None,
    name: Annotated[str | None, Query(max_length=300)] = None,
    status: Annotated[str | None, Query(pattern="^(unconfirmed|confirmed|unsubscribed)$")] = None,
    list: Annotated[str | None, Query(max_length=200)] = None,
    attribute: Annotated[str | None, Query(max_length=500, description="key=value or key")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    """Search by part of the address or name, status (on `list` if given), list, or
    attribute."""
    rows = subscribers.search_subscribers(
        session,
        email=email,
        name=name,
        status=status,
        list_slug=list,
        attribute=attribute,
        after_id=decode_cursor(cursor),
        limit=limit,
        list_ids=caller.list_ids,
    )
    items = [SubscriberOut(**subscribers.describe_subscriber(session, s)) for s in rows]
    return page(request, items, rows[-1].id if rows else None, limit)


@router.get("/subscribers/{subscriber_id}", response_model=SubscriberOut, tags=["subscribers"])
def get_subscriber(
    subscriber_id: Id,
    caller: Annotated[Caller, Depends(scoped("subscribers:read"))],
    session: ReadSession,
) -> SubscriberOut:
    found = subscribers.get_subscriber(session, subscriber_id)
    data = subscribers.describe_subscriber(session, found)
    if caller.list_ids is not None:
        allowed = {get_list(session, s).id for s in data["lists"]} & set(caller.list_ids)
        if not allowed:
            raise ApiError(404, f"no subscriber {subscriber_id}")
    return SubscriberOut(**data)


@router.post("/subscribers", status_code=200, response_model=ImportReportOut, tags=["subscribers"])
def bulk_upsert(
    body: BulkIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:write"))],
) -> Response:
    """Add or update people as confirmed members of a list (one or thousands); a
    forgotten address is never added back, someone who left stays left."""

    def work(session: Session) -> tuple[int, ImportReportOut, str]:
        caller.check_lists(session, [body.list_slug])
        items = [p.model_dump() for p in body.subscribers]
        report = subscribers.upsert_subscribers(session, body.list_slug, items, source="api")
        return 200, ImportReportOut(**report.as_json()), ""

    return write(request, caller, body, work)


@router.post(
    "/subscribers/export-data",
    tags=["subscribers"],
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
def export_data(
    body: EmailIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:read"))],
) -> Response:
    """Everything held on one person (a data access request), as JSON."""
    if caller.list_ids is not None:
        raise ApiError(403, "a list-scoped user cannot export a person's data")
    return JSONResponse(
        audited(request, caller, lambda session: data_rights.export_data(session, body.email))
    )


@router.post("/subscribers/forget", response_model=ForgetOut, tags=["subscribers"])
def forget(
    body: EmailIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:write"))],
) -> Response:
    """Erase one person (see `subscribers forget`); only a hash of the address stays."""
    if caller.list_ids is not None:
        raise ApiError(403, "a list-scoped user cannot forget a person")

    def work(session: Session) -> tuple[int, ForgetOut, str]:
        return 200, ForgetOut(**data_rights.forget(session, body.email).as_json()), ""

    return write(request, caller, body, work)


@router.post("/subscribers/tracking", response_model=TrackingOut, tags=["subscribers"])
def tracking(
    body: TrackingIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:write"))],
) -> Response:
    """A reader's "don't track me" (`track: false`): their links are not rewritten and
    their emails carry no pixel, whatever the list says; `track: true` undoes it."""

    def work(session: Session) -> tuple[int, TrackingOut, str]:
        email = set_tracking(session, body.email, body.track)
        return 200, TrackingOut(email=email, track=body.track), ""

    return write(request, caller, body, work)


@router.post("/imports", status_code=201, response_model=ImportJobOut, tags=["imports"])
def start_import(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:write"))],
    file: Annotated[UploadFile, File(description="CSV: email, name, any attribute columns")],
    list: Annotated[str, Form(min_length=1, max_length=200)],
    dry_run: Annotated[bool, Query()] = False,
) -> Response:
    """Import a CSV into a list as a job with its counts and rejected rows (by row);
    `?dry_run=true` says what would change and changes nothing."""
    data = file.file.read(MAX_CSV + 1)
    if len(data) > MAX_CSV:
        raise ApiError(422, f"the file is larger than {MAX_CSV:,} bytes", field="file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ApiError(422, f"row {line} is not UTF-8 text", field="file") from exc
    name = (file.filename or "upload.csv")[:300]

    def work(session: Session) -> tuple[int, ImportJobOut, str]:
        caller.check_lists(session, [list])
        job, _ = importer.run_import(session, text, name, list, dry_run=dry_run)
        return 201, ImportJobOut(**importer.describe_job(job)), f"/api/v1/imports/{job.id}"

    return write(request, caller, None, work)


@router.get("/imports/{import_id}", response_model=ImportJobOut, tags=["imports"])
def get_import(
    import_id: Id,
    caller: Annotated[Caller, Depends(scoped("subscribers:read"))],
    session: ReadSession,
) -> ImportJobOut:
    job = importer.get_job(session, import_id)
    caller.check_list_ids([job.list_id])
    return ImportJobOut(**importer.describe_job(job))


def _suppression_out(row: Suppression) -> SuppressionOut:
    return SuppressionOut(
        id=row.id,
        email=row.email,
        hashed=row.email is None,
        reason=row.reason,
        detail=row.detail,
        created_at=row.created_at.isoformat() if row.created_at else None,
    )


@router.get("/suppressions", response_model=Page[SuppressionOut], tags=["suppressions"])
def list_suppressions(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:read"))],
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    rows = list(
        session.scalars(
            select(Suppression)
            .where(Suppression.id > decode_cursor(cursor))
            .order_by(Suppression.id)
            .limit(limit)
        )
    )
    return page(request, [_suppression_out(r) for r in rows], rows[-1].id if rows else None, limit)


@router.post("/suppressions", status_code=201, response_model=SuppressionOut, tags=["suppressions"])
def add_suppression(
    body: SuppressionIn,
    request: Request,
    caller: Annotated[Caller, Depends(scoped("subscribers:write"))],
) -> Response:
    """Never mail this address again (a manual suppression)."""

    def work(session: Session) -> tuple[int, SuppressionOut, str]:
        address = normalise_email(body.email)
        suppress_address(session, address, "manual", body.detail)
        row = session.scalar(select(Suppression).where(Suppression.email == address))
        assert row is not None
        return 201, _suppression_out(row), ""

    return write(request, caller, body, work)


@router.get("/bounces", response_model=Page[BounceOut], tags=["bounces"])
def list_bounces(
    request: Request,
    caller: Annotated[Caller, Depends(scoped("deliveries:read"))],
    session: ReadSession,
    email: Annotated[str | None, Query(max_length=320)] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JSONResponse:
    """Bounces and complaints acted on, oldest first; `email` for one address."""
    query = select(BounceEvent).where(BounceEvent.id > decode_cursor(cursor))
    if email:
        query = query.where(BounceEvent.email == email.strip())
    rows = list(session.scalars(query.order_by(BounceEvent.id).limit(limit)))
    items = [
        BounceOut(
            id=r.id,
            source=r.source,
            email=r.email,
            kind=r.kind,
            detail=r.detail,
            received_at=r.received_at.isoformat() if r.received_at else None,
        )
        for r in rows
    ]
    return page(request, items, rows[-1].id if rows else None, limit)

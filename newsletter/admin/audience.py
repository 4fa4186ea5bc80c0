"""Subscribers (search, profile and timeline, edit, unsubscribe, export, forget),
lists (counts, growth), and CSV imports: a dry run first, then the real import in
the background with a progress bar and the rejected rows as a CSV."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter.admin.common import (
    PREFIX,
    Forbidden,
    ReadSession,
    Viewer,
    is_htmx,
    list_named,
    needs,
    redirect,
    render,
    write,
)
from newsletter.admin.i18n import _
from newsletter.audience import importer, subscribers
from newsletter.audience.lists import create_list, get_list, list_growth, list_lists
from newsletter.audience.models import OptIn, Subscriber
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError
from newsletter.services import data_rights

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("subscribers:read"))]
Writer = Annotated[Viewer, Depends(needs("subscribers:write"))]
ListReader = Annotated[Viewer, Depends(needs("lists:read"))]
ListWriter = Annotated[Viewer, Depends(needs("lists:write"))]
MAX_CSV = 20_000_000
SHOWN_PROBLEMS = 20
Short = Annotated[str, Query(max_length=320)]


def _visible_subscriber(session: Session, viewer: Viewer, subscriber_id: int) -> Subscriber:
    found = subscribers.get_subscriber(session, subscriber_id)
    if viewer.list_ids is not None:
        data = subscribers.describe_subscriber(session, found)
        ids = {get_list(session, slug).id for slug in data["lists"]}
        if not ids & set(viewer.list_ids):
            raise InvalidInputError(_("No such subscriber among your lists."))
    return found


# --- subscribers ------------------------------------------------------------------------


@router.get("/subscribers")
def search(
    request: Request,
    viewer: Reader,
    session: ReadSession,
    email: Short = "",
    name: Short = "",
    attribute: Short = "",
    status: Annotated[str, Query(pattern="^(|unconfirmed|confirmed|unsubscribed)$")] = "",
    list: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Search by part of the address or name, an attribute (key=value), a status."""
    if list:
        list_named(session, list)
    rows = subscribers.search_subscribers(
        session,
        email=email or None,
        name=name or None,
        status=status or None,
        list_slug=list or None,
        attribute=attribute or None,
        limit=100,
        list_ids=viewer.list_ids,
    )
    found = [subscribers.describe_subscriber(session, s) for s in rows]
    return render(
        request,
        "subscribers.html",
        viewer,
        title=_("Subscribers"),
        found=found,
        query={
            "email": email,
            "name": name,
            "attribute": attribute,
            "status": status,
            "list": list,
        },
        lists=list_lists(session),
    )


@router.get("/subscribers/{subscriber_id}")
def profile(subscriber_id: int, request: Request, viewer: Reader, session: ReadSession) -> Response:
    found = _visible_subscriber(session, viewer, subscriber_id)
    data = subscribers.describe_subscriber(session, found)
    return render(
        request,
        "subscriber.html",
        viewer,
        title=_("Subscriber {id}").format(id=subscriber_id),
        data=data,
        events=data_rights.timeline(session, subscriber_id),
    )


@router.post("/subscribers/{subscriber_id}/edit")
def edit_subscriber(
    subscriber_id: int,
    request: Request,
    viewer: Writer,
    name: Annotated[str, Form(max_length=300)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    def work(session: Session) -> None:
        found = _visible_subscriber(session, viewer, subscriber_id)
        subscribers.update_subscriber(
            session,
            found,
            name=name,
            timezone=timezone.strip() or None,
        )

    write(request, viewer, work)
    return redirect(f"{PREFIX}/subscribers/{subscriber_id}", _("Saved."))


@router.post("/subscribers/{subscriber_id}/unsubscribe")
def unsubscribe(
    subscriber_id: int,
    request: Request,
    viewer: Writer,
    list: Annotated[str, Form(max_length=200)],
) -> Response:
    def work(session: Session) -> None:
        found = _visible_subscriber(session, viewer, subscriber_id)
        viewer.require_lists([list_named(session, list).id])
        subscribers.unsubscribe_by_staff(session, found, list)

    write(request, viewer, work)
    return redirect(
        f"{PREFIX}/subscribers/{subscriber_id}", _("Unsubscribed from {list}.").format(list=list)
    )


@router.post("/subscribers/{subscriber_id}/export")
def export_data(subscriber_id: int, request: Request, viewer: Reader) -> Response:
    """Everything held on the person (a data access request), as a JSON download;
    the export itself is audited."""
    if viewer.list_ids is not None:
        raise Forbidden(_("A user limited to some lists cannot export a person's data."))

    def work(session: Session) -> dict[str, object]:
        found = _visible_subscriber(session, viewer, subscriber_id)
        return data_rights.export_data(session, found.email)

    data = write(request, viewer, work)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"'},
    )


@router.get("/subscribers/{subscriber_id}/forget")
def forget_form(
    subscriber_id: int, request: Request, viewer: Writer, session: ReadSession
) -> Response:
    found = _visible_subscriber(session, viewer, subscriber_id)
    return render(
        request,
        "forget.html",
        viewer,
        title=_("Forget subscriber {id}").format(id=subscriber_id),
        data=subscribers.describe_subscriber(session, found),
    )


@router.post("/subscribers/{subscriber_id}/forget")
def forget(
    subscriber_id: int,
    request: Request,
    viewer: Writer,
    confirm: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    """Erase the person for good (typed confirmation: their address); only a hash of
    the address stays, on the suppression list, so they are never mailed again."""
    if viewer.list_ids is not None:
        raise Forbidden(_("A user limited to some lists cannot forget a person."))

    def work(session: Session) -> None:
        found = _visible_subscriber(session, viewer, subscriber_id)
        if confirm.strip().lower() != found.email:
            raise InvalidInputError(_("Type the subscriber's address to confirm."))
        data_rights.forget(session, found.email)

    write(request, viewer, work)
    return redirect(
        f"{PREFIX}/subscribers",
        _("Forgotten. Only a hash of the address is kept, so they are never mailed again."),
    )


# --- lists ------------------------------------------------------------------------------


@router.get("/lists")
def lists(request: Request, viewer: ListReader, session: ReadSession) -> Response:
    rows = [
        (ml, count, list_growth(session, ml.id, utcnow(), weeks=8))
        for ml, count in list_lists(session)
        if viewer.list_ids is None or ml.id in viewer.list_ids
    ]
    return render(request, "lists.html", viewer, title=_("Lists"), rows=rows)


@router.post("/lists")
def new_list(
    request: Request,
    viewer: ListWriter,
    slug: Annotated[str, Form(max_length=200)],
    name: Annotated[str, Form(max_length=300)],
    opt_in: Annotated[str, Form(pattern="^(single|double)$")] = "double",
    description: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    write(
        request,
        viewer,
        lambda session: create_list(session, slug.strip(), name, OptIn(opt_in), description),
    )
    return redirect(f"{PREFIX}/lists", _("List {slug} created.").format(slug=slug))


# --- imports ----------------------------------------------------------------------------


@router.get("/imports/new")
def import_form(request: Request, viewer: Writer, session: ReadSession, list: str = "") -> Response:
    return render(
        request,
        "import.html",
        viewer,
        title=_("Import subscribers"),
        lists=list_lists(session),
        chosen=list,
    )


def _read_upload(file: UploadFile) -> tuple[str, str]:
    data = file.file.read(MAX_CSV + 1)
    if len(data) > MAX_CSV:
        raise InvalidInputError(_("The file is larger than {n:,} bytes.").format(n=MAX_CSV))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(
            _("Row {line} is not UTF-8 text: save the file as CSV UTF-8.").format(line=line)
        ) from exc
    return text, (file.filename or "upload.csv")[:300]


@router.post("/imports/dry-run")
def dry_run(
    request: Request,
    viewer: Writer,
    file: Annotated[UploadFile, File()],
    list: Annotated[str, Form(max_length=200)],
) -> Response:
    """What the import would do, changing nothing: counts and the first bad rows."""
    text, name = _read_upload(file)

    def work(session: Session) -> int:
        viewer.require_lists([list_named(session, list).id])
        job, _report = importer.run_import(session, text, name, list, dry_run=True, keep_file=True)
        return job.id

    job_id = write(request, viewer, work)
    return redirect(f"{PREFIX}/imports/{job_id}")


@router.post("/imports/{job_id}/run")
def run_for_real(job_id: int, request: Request, viewer: Writer) -> Response:
    """Import for real the file a dry run read, in the background."""

    def work(session: Session) -> int:
        viewer.require_lists([importer.get_job(session, job_id).list_id])
        return importer.queue_from_dry_run(session, job_id).id

    new_id = write(request, viewer, work)
    return redirect(f"{PREFIX}/imports/{new_id}", _("Import started."))


@router.get("/imports/{job_id}")
def import_job(job_id: int, request: Request, viewer: Reader, session: ReadSession) -> Response:
    job = importer.get_job(session, job_id)
    viewer.require_lists([job.list_id])
    context: dict[str, Any] = {
        "job": job,
        "progress": importer.job_progress(job),
        "problems": job.problems[:SHOWN_PROBLEMS],
        "more": max(0, len(job.problems) - SHOWN_PROBLEMS),
    }
    if is_htmx(request):
        return render(request, "import_progress.html", viewer, title="", **context)
    title = _("Dry run of {file}") if job.dry_run else _("Import of {file}")
    return render(
        request, "import_job.html", viewer, title=title.format(file=job.filename), **context
    )


@router.get("/imports/{job_id}/rejected.csv")
def rejected_rows(job_id: int, request: Request, viewer: Reader, session: ReadSession) -> Response:
    job = importer.get_job(session, job_id)
    viewer.require_lists([job.list_id])
    return Response(
        importer.rejected_rows_csv(job),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="rejected-{job_id}.csv"'},
    )

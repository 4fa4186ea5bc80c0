"""Segments: the saved filters (list, create, delete) and the live count the composer's
rule editor asks for (htmx; a plain page without JavaScript)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import ImmutableMultiDict

from newsletter.admin.common import (
    PREFIX,
    ReadSession,
    Viewer,
    console_of,
    is_htmx,
    needs,
    redirect,
    render,
    write,
)
from newsletter.admin.i18n import _
from newsletter.audience.segment_rules import format_line, rules_from_rows
from newsletter.errors import InvalidInputError
from newsletter.services import segments

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("segments:read"))]
Writer = Annotated[Viewer, Depends(needs("segments:write"))]


def _page(
    request: Request,
    viewer: Viewer,
    session: Session,
    *,
    error: str = "",
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    rows = [
        segments.describe_segment(session, s, count=True) for s in segments.list_segments(session)
    ]
    return render(
        request,
        "segments.html",
        viewer,
        title=_("Segments"),
        segments=rows,
        error=error,
        values=values or {},
        status=status,
    )


@router.get("/segments")
def segments_page(request: Request, viewer: Reader, session: ReadSession) -> Response:
    return _page(request, viewer, session)


@router.post("/segments")
def create_segment(
    request: Request,
    viewer: Writer,
    slug: Annotated[str, Form(max_length=200)] = "",
    name: Annotated[str, Form(max_length=300)] = "",
    rules: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    def work(session: Session) -> None:
        segments.create_segment(session, slug.strip(), name.strip() or slug.strip(), rules)

    try:
        write(request, viewer, work)
    except InvalidInputError as exc:
        with console_of(request).sessions() as session:
            values = {"slug": slug, "name": name, "rules": rules}
            return _page(request, viewer, session, error=str(exc), values=values, status=422)
    return redirect(f"{PREFIX}/segments", _("Segment saved."))


@router.post("/segments/{slug}/delete")
def delete_segment(slug: str, request: Request, viewer: Writer) -> Response:
    try:
        write(request, viewer, lambda session: segments.delete_segment(session, slug))
    except InvalidInputError as exc:
        return redirect(f"{PREFIX}/segments", str(exc))
    return redirect(f"{PREFIX}/segments", _("Segment deleted."))


def composer_rules(data: ImmutableMultiDict[str, Any]) -> dict[str, Any] | str | None:
    """The composer's rules: the one-line form when typed in, else those built in the
    rule rows (None when both are empty). `data` is the form or the query string."""
    line = str(data.get("segment_rules") or "").strip()[:20_000]
    if line:
        return line
    getlist = data.getlist
    rows = list(
        zip(
            (str(v)[:200] for v in getlist("seg_field")),
            (str(v)[:20] for v in getlist("seg_op")),
            (str(v)[:5000] for v in getlist("seg_value")),
            strict=False,
        )
    )[:20]
    return rules_from_rows(str(data.get("seg_match") or "all"), rows)


@router.get("/segments/count")
def count(request: Request, viewer: Reader, session: ReadSession) -> Response:
    """How many of the chosen lists' confirmed members the composer's rules (or its
    saved segment) match now: the live count (htmx fragment)."""
    return _count(request, viewer, session, request.query_params)


@router.post("/segments/count")
async def count_without_script(request: Request, viewer: Reader) -> Response:
    """The composer's "Count" button without JavaScript: the same, as a page."""
    form = await request.form()
    with console_of(request).sessions() as session:
        return _count(request, viewer, session, form)


def _count(
    request: Request, viewer: Viewer, session: Session, data: ImmutableMultiDict[str, Any]
) -> Response:
    error, number, line = "", None, ""
    lists = [str(s)[:200] for s in data.getlist("lists")][:100]
    segment = str(data.get("segment") or "")[:200]
    try:
        rules = composer_rules(data)
        if rules is None and segment:
            rules = segments.saved_rules(session, segment)
        if rules:
            node = segments.read_rules(rules)
            number = segments.count_matching(session, node, lists or None)
            line = format_line(node)
    except InvalidInputError as exc:
        error = str(exc)
    return render(
        request,
        "segment_count.html" if is_htmx(request) else "segment_count_page.html",
        viewer,
        title=_("Segment count"),
        number=number,
        line=line,
        error=error,
        lists=lists,
    )


# After /segments/count: a slug is matched last.
@router.get("/segments/{slug}")
def segment_page(slug: str, request: Request, viewer: Reader, session: ReadSession) -> Response:
    segment = segments.describe_segment(session, segments.get_segment(session, slug), True)
    return _edit_page(request, viewer, segment, dict(segment))


def _edit_page(
    request: Request,
    viewer: Viewer,
    segment: dict[str, Any],
    values: dict[str, Any],
    error: str = "",
    status: int = 200,
) -> Response:
    return render(
        request,
        "segment.html",
        viewer,
        title=_("Segment “{name}”").format(name=segment["name"]),
        segment=segment,
        values=values,
        error=error,
        status=status,
    )


@router.post("/segments/{slug}")
def update_segment(
    slug: str,
    request: Request,
    viewer: Writer,
    name: Annotated[str, Form(max_length=300)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    rules: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    def work(session: Session) -> None:
        segments.update_segment(
            session, slug, name=name, description=description, rules=rules.strip() or None
        )

    try:
        write(request, viewer, work)
    except InvalidInputError as exc:
        with console_of(request).sessions() as session:
            segment = segments.describe_segment(session, segments.get_segment(session, slug))
        values = {"name": name, "description": description, "line": rules}
        return _edit_page(request, viewer, segment, values, str(exc), 422)
    return redirect(f"{PREFIX}/segments/{slug}", _("Segment saved."))

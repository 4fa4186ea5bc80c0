"""Segments: saved filters over subscribers, their live count (services/segments.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from newsletter.api.common import Caller, ReadSession, decode_cursor, page, scoped, write
from newsletter.api.schemas import (
    Page,
    SegmentCountIn,
    SegmentCountOut,
    SegmentIn,
    SegmentOut,
    SegmentPatch,
)
from newsletter.audience.segment_rules import format_line
from newsletter.services import segments

router = APIRouter()
Reader = Annotated[Caller, Depends(scoped("segments:read"))]
Writer = Annotated[Caller, Depends(scoped("segments:write"))]


def _out(session: Session, segment_slug: str, count: bool = False) -> SegmentOut:
    segment = segments.get_segment(session, segment_slug)
    return SegmentOut(**segments.describe_segment(session, segment, count))


@router.get("/segments", response_model=Page[SegmentOut], tags=["segments"])
def list_segments(
    request: Request,
    caller: Reader,
    session: ReadSession,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JSONResponse:
    rows = segments.list_segments(session, decode_cursor(cursor), limit)
    items = [SegmentOut(**segments.describe_segment(session, s)) for s in rows]
    return page(request, items, rows[-1].id if rows else None, limit)


@router.post("/segments", status_code=201, response_model=SegmentOut, tags=["segments"])
def create(body: SegmentIn, request: Request, caller: Writer) -> Response:
    """A saved segment; its rules are checked (errors name the rule's path)."""

    def work(session: Session) -> tuple[int, SegmentOut, str]:
        segment = segments.create_segment(
            session, body.slug, body.name, body.rules, body.description
        )
        return 201, _out(session, segment.slug), f"/api/v1/segments/{segment.slug}"

    return write(request, caller, body, work)


@router.post("/segments/count", response_model=SegmentCountOut, tags=["segments"])
def count_rules(body: SegmentCountIn, caller: Reader, session: ReadSession) -> SegmentCountOut:
    """How many subscribers the rules match now (only the lists' confirmed members when
    `lists` is given): the live count of a segment being built. Nothing is saved."""
    node = segments.read_rules(body.rules)
    count = segments.count_matching(session, node, body.lists or None)
    return SegmentCountOut(count=count, line=format_line(node))


@router.get("/segments/{slug}", response_model=SegmentOut, tags=["segments"])
def get_one(slug: str, caller: Reader, session: ReadSession) -> SegmentOut:
    return _out(session, slug)


@router.get("/segments/{slug}/count", response_model=SegmentCountOut, tags=["segments"])
def count_saved(slug: str, caller: Reader, session: ReadSession) -> SegmentCountOut:
    """How many subscribers the saved segment matches now."""
    out = _out(session, slug, count=True)
    return SegmentCountOut(count=out.count or 0, line=out.line)


@router.patch("/segments/{slug}", response_model=SegmentOut, tags=["segments"])
def update(slug: str, body: SegmentPatch, request: Request, caller: Writer) -> Response:
    """Change a segment; campaigns using it see the change when their next run starts."""

    def work(session: Session) -> tuple[int, SegmentOut, str]:
        segment = segments.update_segment(
            session, slug, name=body.name, rules=body.rules, description=body.description
        )
        return 200, _out(session, segment.slug), ""

    return write(request, caller, body, work)


@router.delete("/segments/{slug}", response_model=SegmentOut, tags=["segments"])
def delete(slug: str, request: Request, caller: Writer) -> Response:
    """Remove a segment that no campaign uses (422 naming the campaigns otherwise)."""

    def work(session: Session) -> tuple[int, SegmentOut, str]:
        out = _out(session, slug)
        segments.delete_segment(session, slug)
        return 200, out, ""

    return write(request, caller, None, work)

"""Home (what needs attention now) and the calendar (month and week)."""

from __future__ import annotations

import calendar as month_maths
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from newsletter.admin.common import ReadSession, Viewer, is_htmx, needs, render
from newsletter.admin.i18n import _
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError
from newsletter.services.attention import needs_attention
from newsletter.services.calendar import calendar

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("campaigns:read"))]


@router.get("/")
def home(request: Request, viewer: Reader, session: ReadSession) -> Response:
    settings = request.app.state.console.settings
    found = needs_attention(session, utcnow(), timedelta(seconds=settings.stall_seconds))
    template = "home_running.html" if is_htmx(request) else "home.html"
    return render(request, template, viewer, title=_("Home"), found=found)


def _parse_day(value: str | None) -> date:
    if not value:
        return utcnow().date()
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInputError(f"date {value!r} is not a day like 2026-12-07") from exc


@router.get("/calendar")
def calendar_page(
    request: Request,
    viewer: Reader,
    session: ReadSession,
    view: Annotated[str, Query(pattern="^(month|week)$")] = "month",
    day: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """A month (weeks from Monday) or one week of sends, planned apart from scheduled."""
    shown = _parse_day(day)
    if view == "week":
        first = shown - timedelta(days=shown.weekday())
        last = first + timedelta(days=6)
        previous, following = first - timedelta(days=7), first + timedelta(days=7)
        heading = _("Week of {day}").format(day=first.isoformat())
    else:
        month_start = shown.replace(day=1)
        days_in = month_maths.monthrange(shown.year, shown.month)[1]
        month_end = month_start + timedelta(days=days_in - 1)
        first = month_start - timedelta(days=month_start.weekday())
        last = month_end + timedelta(days=6 - month_end.weekday())
        previous = (month_start - timedelta(days=1)).replace(day=1)
        following = month_end + timedelta(days=1)
        heading = f"{month_maths.month_name[shown.month]} {shown.year}"
    entries = calendar(session, first, last)
    by_day: dict[date, list[object]] = {}
    for entry in entries:
        by_day.setdefault(entry.day, []).append(entry)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return render(
        request,
        "calendar.html",
        viewer,
        title=_("Calendar"),
        heading=heading,
        view=view,
        shown=shown,
        days=days,
        by_day=by_day,
        today=utcnow().date(),
        previous=previous,
        following=following,
        weekdays=[_("Mon"), _("Tue"), _("Wed"), _("Thu"), _("Fri"), _("Sat"), _("Sun")],
    )

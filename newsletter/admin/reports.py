"""A campaign's results: the report page, its CSV, the link map over the email as sent,
and who clicked (individual tracking only); a drip sequence's funnel.

Every number comes from services/reports.py, the module the CLI (`newsletter campaigns
report`) and the API (`GET /api/v1/campaigns/{id}/report`) read, so the three agree;
these handlers only choose the run and the template.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.admin.common import PREVIEW_CSP, ReadSession, Viewer, needs, render
from newsletter.admin.i18n import _
from newsletter.errors import NotFoundError
from newsletter.sequences.service import get_sequence
from newsletter.services import reports

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("reports:read"))]
RunQuery = Annotated[int | None, Query(ge=1)]
# Who clicked names readers: like the API, it needs reading subscribers too.
WHO_CLICKED_SCOPE = "subscribers:read"


def _report(session: Any, campaign_id: int, run: int | None) -> dict[str, Any]:
    return reports.campaign_report(session, campaign_id, run)


def _run_id(report: dict[str, Any]) -> int:
    if report["run"] is None:
        raise NotFoundError(_("This campaign has no run yet: there is nothing to report."))
    return int(report["run"]["id"])


def _may_see_who(viewer: Viewer) -> bool:
    return viewer.may(WHO_CLICKED_SCOPE)


def _csv(text: str, filename: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/campaigns/{campaign_id}/report")
def report_page(
    campaign_id: int,
    request: Request,
    viewer: Reader,
    session: ReadSession,
    run: RunQuery = None,
) -> Response:
    """Delivery, opens and clicks (human and machine), per link, per list, over time,
    the campaign's runs side by side, and what opens cannot tell."""
    data = _report(session, campaign_id, run)
    run_id = data["run"]["id"] if data["run"] else None
    individual = run_id is not None and reports.tracks_individually(session, run_id)
    return render(
        request,
        "report.html",
        viewer,
        title=_("Report of “{name}”").format(name=data["campaign"]["name"]),
        report=data,
        charts=reports.report_charts(data),
        individual=individual,
        may_see_who=individual and _may_see_who(viewer),
        query=f"?run={run_id}" if run is not None and run_id is not None else "",
    )


@router.get("/campaigns/{campaign_id}/report.csv")
def report_csv(
    campaign_id: int, viewer: Reader, session: ReadSession, run: RunQuery = None
) -> Response:
    """The report as rows of section, item, measure, value (as `--csv` and the API)."""
    data = _report(session, campaign_id, run)
    suffix = f"-run-{data['run']['id']}" if data["run"] else ""
    return _csv(reports.report_csv(data), f"campaign-{campaign_id}{suffix}-report.csv")


@router.get("/campaigns/{campaign_id}/report/link-map.html")
def link_map(
    campaign_id: int, viewer: Reader, session: ReadSession, run: RunQuery = None
) -> Response:
    """The email as sent, each link with its clicks beside it: a document of its own
    for a sandboxed frame (its inline styles, no script), like the preview."""
    data = _report(session, campaign_id, run)
    page = reports.link_map(session, _run_id(data), data)
    headers = {"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"}
    return HTMLResponse(page, headers=headers)


def _who(session: Any, viewer: Viewer, campaign_id: int, run: int | None) -> Any:
    viewer.require(WHO_CLICKED_SCOPE)
    data = _report(session, campaign_id, run)
    run_id = _run_id(data)
    if not reports.tracks_individually(session, run_id):
        raise NotFoundError(
            _(
                "Run {run} counted clicks anonymously (or not at all): nobody can be "
                "named as having clicked."
            ).format(run=run_id)
        )
    return data, reports.who_clicked(session, run_id)


@router.get("/campaigns/{campaign_id}/report/who-clicked")
def who_clicked_page(
    campaign_id: int,
    request: Request,
    viewer: Reader,
    session: ReadSession,
    run: RunQuery = None,
) -> Response:
    """Readers who clicked (people's clicks only), first click first."""
    data, rows = _who(session, viewer, campaign_id, run)
    return render(
        request,
        "report_who_clicked.html",
        viewer,
        title=_("Who clicked in “{name}”").format(name=data["campaign"]["name"]),
        report=data,
        rows=rows,
    )


@router.get("/campaigns/{campaign_id}/report/who-clicked.csv")
def who_clicked_csv(
    campaign_id: int, viewer: Reader, session: ReadSession, run: RunQuery = None
) -> Response:
    data, rows = _who(session, viewer, campaign_id, run)
    filename = f"campaign-{campaign_id}-run-{data['run']['id']}-who-clicked.csv"
    return _csv(reports.who_clicked_csv(rows), filename)


@router.get("/sequences/{sequence_id}/report")
def sequence_funnel_page(
    sequence_id: int, request: Request, viewer: Reader, session: ReadSession
) -> Response:
    """Step by step: sent, opened and clicked by people, and sent the next step (as
    `newsletter sequences report` and `GET /api/v1/sequences/{id}/report`)."""
    sequence = get_sequence(session, sequence_id)
    name = f"{sequence.series.title} → {sequence.mailing_list.name}"
    return render(
        request,
        "sequence_report.html",
        viewer,
        title=_("Funnel of “{name}”").format(name=name),
        name=name,
        funnel=reports.sequence_funnel(session, sequence_id),
    )

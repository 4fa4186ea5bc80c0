"""The public archive: every email that went out, every published article, series in
order with previous and next."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.content.models import Article, Series
from newsletter.content.series import is_published, published_in_order
from newsletter.content.views import article_view, human_date
from newsletter.db import utcnow
from newsletter.rendering.model import Snapshot
from newsletter.rendering.preview import fill_html
from newsletter.rendering.slots import SlotTemplate, slot_values
from newsletter.runs.models import Run, RunStatus
from newsletter.web.common import SessionDep, Web

ARCHIVED_RUNS = (RunStatus.finished, RunStatus.sending)
NEUTRAL_SLOTS = {"name": "", "email": "", "unsubscribe_url": "#", "preferences_url": "#"}


@dataclass(frozen=True)
class ArchivedRun:
    run_id: int
    subject: str
    date: str


@dataclass(frozen=True)
class ArchivedArticle:
    slug: str
    title: str
    date: str
    part: int  # 1-based place among the series' published articles; 0 outside a series
    parts: int


@dataclass(frozen=True)
class ArchivedSeries:
    title: str
    articles: list[ArchivedArticle]


def _subject(subject: str, fallbacks: dict[str, str] | None, marker: str) -> str:
    """A run's frozen subject with its slots filled as for an anonymous reader."""
    template = SlotTemplate.compile(subject, marker)
    values = dict.fromkeys(template.keys, "")
    values.update(slot_values(fallbacks or {}, NEUTRAL_SLOTS))
    return template.fill(values)


def archived_runs(session: Session) -> list[ArchivedRun]:
    """Every campaign run that went out (finished or still sending), newest first."""
    sent = func.coalesce(Run.started_at, Run.occurrence_at)
    rows = session.execute(
        select(
            Run.id,
            Run.snapshot["subject"].as_string(),
            Run.snapshot["fallbacks"],
            Run.snapshot["marker"].as_string(),
            sent,
        )
        .where(
            Run.campaign_id.is_not(None),
            Run.status.in_(ARCHIVED_RUNS),
            Run.snapshot.is_not(None),
        )
        .order_by(sent.desc(), Run.id.desc())
    ).all()
    return [
        ArchivedRun(run_id, _subject(subject or "", fallbacks, marker or ""), human_date(at))
        for run_id, subject, fallbacks, marker, at in rows
    ]


def archived_articles(session: Session) -> tuple[list[ArchivedSeries], list[ArchivedArticle]]:
    """Published articles: per series in series order, then the rest newest first."""
    now = utcnow()
    series = []
    for each in session.scalars(select(Series).order_by(Series.title, Series.id)):
        ordered = published_in_order(session, each.id, now=now)
        if ordered:
            articles = [
                ArchivedArticle(a.slug, a.title, human_date(a.published_at), i, len(ordered))
                for i, a in enumerate(ordered, start=1)
            ]
            series.append(ArchivedSeries(each.title, articles))
    loose = session.scalars(
        select(Article)
        .where(Article.series_id.is_(None), Article.published_at <= now)
        .order_by(Article.published_at.desc(), Article.id.desc())
    )
    return series, [
        ArchivedArticle(a.slug, a.title, human_date(a.published_at), 0, 0) for a in loose
    ]


def routes(web: Web) -> APIRouter:
    """/archive, /archive/runs/{id} and /articles/{slug}."""
    app = APIRouter()

    @app.get("/archive", response_class=HTMLResponse)
    def archive(request: Request, session: SessionDep) -> HTMLResponse:
        series, loose = archived_articles(session)
        return web.page(
            request,
            "archive.html",
            title="Archive",
            runs=archived_runs(session),
            series=series,
            articles=loose,
        )

    @app.get("/archive/runs/{run_id}", response_class=HTMLResponse)
    def archived_run(request: Request, run_id: int, session: SessionDep) -> HTMLResponse:
        run = session.get(Run, run_id)
        if run is None or run.snapshot is None:
            return web.message(request, 404, "Not found", "No such email.")
        return HTMLResponse(fill_html(Snapshot.from_json(run.snapshot), NEUTRAL_SLOTS))

    @app.get("/articles/{slug}", response_class=HTMLResponse)
    def article_page(request: Request, slug: str, session: SessionDep) -> HTMLResponse:
        article = session.scalar(select(Article).where(Article.slug == slug))
        if article is None or not is_published(article):
            return web.message(request, 404, "Not found", "No such article.")
        return web.page(
            request, "article.html", a=article_view(session, article, web.settings.base_url)
        )

    return app

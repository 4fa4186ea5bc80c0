"""The public archive: the emails of public lists, every published article, series in
order with previous and next.

An email is shown at `/archive/emails/{key}`, its run's random archive key (the "view in
your browser" link of every copy), whatever its list's archive setting; only the emails
of lists whose archive is public are listed, and a cancelled run is shown nowhere. The
email is staff-authored HTML, so it is served as a sandboxed document (no scripts, no
forms, no plugins; links still work) with `nosniff`, never as a page of this origin.
Listings are paged by keyset (the last item shown names the next page), so a page
costs the same with ten articles or a hundred thousand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from newsletter.audience.models import ArchiveVisibility, MailingList
from newsletter.campaigns.models import campaign_lists
from newsletter.content.models import Article, Series
from newsletter.content.series import is_published, published_in_order
from newsletter.content.views import article_view, human_date
from newsletter.db import utcnow
from newsletter.rendering.model import Snapshot
from newsletter.rendering.preview import archive_html, archive_subject
from newsletter.runs.models import Run, RunStatus
from newsletter.sequences.models import Sequence
from newsletter.web.common import SessionDep, Web

LISTED_RUNS = (RunStatus.finished, RunStatus.sending)
# A paused run went to some readers, whose "view in your browser" link must work.
SHOWN_RUNS = (*LISTED_RUNS, RunStatus.paused)
EMAILS_PER_PAGE = 20
ARTICLES_PER_PAGE = 50
SERIES_SHOWN = 100
SERIES_PARTS_SHOWN = 500
# Staff-authored HTML: a document of its own, which runs nothing and can be framed by
# nobody; its images and links still work.
EMAIL_HEADERS = {
    "Content-Security-Policy": (
        "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-"
        "activation; default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class ArchivedRun:
    key: str
    subject: str
    date: str


@dataclass(frozen=True)
class ArchivedArticle:
    slug: str
    title: str
    date: str
    part: int  # 1-based place among the series' published articles; 0 outside a series
    parts: int
    series_title: str = ""


@dataclass(frozen=True)
class ArchivedSeries:
    slug: str
    title: str
    articles: int


def _private_campaigns() -> Any:
    """Campaigns with a list whose archive is private."""
    return (
        select(campaign_lists.c.campaign_id)
        .join(MailingList, MailingList.id == campaign_lists.c.list_id)
        .where(MailingList.archive == ArchiveVisibility.private)
    )


def _sent_at() -> ColumnElement[datetime]:
    return func.coalesce(Run.started_at, Run.occurrence_at)


def archived_runs(session: Session, after: str = "") -> tuple[list[ArchivedRun], str]:
    """A page of the campaign runs of public lists that went out, newest first, and the
    key naming the next page ("" on the last). `after` is the last key of the page
    before."""
    sent = _sent_at()
    query = (
        select(
            Run.archive_key,
            Run.snapshot["subject"].as_string(),
            Run.snapshot["fallbacks"],
            Run.snapshot["subject_fallbacks"],
            Run.snapshot["marker"].as_string(),
            sent,
        )
        .where(
            Run.campaign_id.is_not(None),
            Run.campaign_id.not_in(_private_campaigns()),
            Run.status.in_(LISTED_RUNS),
            Run.snapshot.is_not(None),
        )
        .order_by(sent.desc(), Run.id.desc())
        .limit(EMAILS_PER_PAGE + 1)
    )
    if after:
        last = session.execute(select(sent, Run.id).where(Run.archive_key == after)).one_or_none()
        if last is not None:
            query = query.where(or_(sent < last[0], and_(sent == last[0], Run.id < last[1])))
    rows = session.execute(query).all()
    page = [
        ArchivedRun(
            key,
            archive_subject(
                Snapshot(
                    subject=subject or "",
                    html="",
                    text="",
                    fallbacks=fallbacks or {},
                    marker=marker or "",
                    subject_fallbacks=own or None,
                )
            ),
            human_date(at),
        )
        for key, subject, fallbacks, own, marker, at in rows[:EMAILS_PER_PAGE]
    ]
    more = len(rows) > EMAILS_PER_PAGE
    return page, page[-1].key if more else ""


def archived_series(session: Session) -> list[ArchivedSeries]:
    """Series with published articles, by title, with how many (at most SERIES_SHOWN)."""
    now = utcnow()
    count = func.count(Article.id)
    rows = session.execute(
        select(Series.slug, Series.title, count)
        .join(Article, Article.series_id == Series.id)
        .where(Article.published_at.is_not(None), Article.published_at <= now)
        .group_by(Series.id, Series.slug, Series.title)
        .order_by(Series.title, Series.id)
        .limit(SERIES_SHOWN)
    ).all()
    return [ArchivedSeries(slug, title, n) for slug, title, n in rows]


def archived_articles(session: Session, after: str = "") -> tuple[list[ArchivedArticle], str]:
    """A page of published articles, newest first (each with its place in its series),
    and the slug naming the next page ("" on the last)."""
    now = utcnow()
    query = (
        select(Article)
        .where(Article.published_at.is_not(None), Article.published_at <= now)
        .order_by(Article.published_at.desc(), Article.id.desc())
        .limit(ARTICLES_PER_PAGE + 1)
    )
    if after:
        last = session.execute(
            select(Article.published_at, Article.id).where(Article.slug == after)
        ).one_or_none()
        if last is not None and last[0] is not None:
            query = query.where(
                or_(
                    Article.published_at < last[0],
                    and_(Article.published_at == last[0], Article.id < last[1]),
                )
            )
    rows = list(session.scalars(query))
    page = rows[:ARTICLES_PER_PAGE]
    places = _series_places(session, {a.series_id for a in page if a.series_id}, now)
    articles = []
    for a in page:
        part, parts, title = places.get(a.id, (0, 0, ""))
        articles.append(
            ArchivedArticle(a.slug, a.title, human_date(a.published_at), part, parts, title)
        )
    return articles, page[-1].slug if len(rows) > ARTICLES_PER_PAGE else ""


def _series_places(
    session: Session, series_ids: set[int], now: datetime
) -> dict[int, tuple[int, int, str]]:
    """Article id → (part, parts, series title) for the series of one page: one query."""
    if not series_ids:
        return {}
    rows = session.execute(
        select(Article.id, Article.series_id, Series.title)
        .join(Series, Series.id == Article.series_id)
        .where(
            Article.series_id.in_(series_ids),
            Article.published_at.is_not(None),
            Article.published_at <= now,
        )
        .order_by(Article.series_id, Article.position.is_(None), Article.position, Article.id)
    ).all()
    ordered: dict[int | None, list[tuple[int, str]]] = {}
    for article_id, series_id, title in rows:
        ordered.setdefault(series_id, []).append((article_id, title))
    return {
        article_id: (index, len(members), title)
        for members in ordered.values()
        for index, (article_id, title) in enumerate(members, start=1)
    }


def shown_run(session: Session, key: str) -> Run | None:
    """The run whose email `key` names, if it may be shown (it went out, not cancelled)."""
    run = session.scalar(select(Run).where(Run.archive_key == key))
    if run is None or run.snapshot is None or run.status not in SHOWN_RUNS:
        return None
    return run


def is_public(session: Session, run: Run) -> bool:
    """Whether every list the run went to has a public archive."""
    if run.campaign_id is not None:
        private = session.scalar(
            _private_campaigns().where(campaign_lists.c.campaign_id == run.campaign_id).limit(1)
        )
        return private is None
    sequence = session.get(Sequence, run.sequence_id) if run.sequence_id else None
    return sequence is not None and sequence.mailing_list.archive is ArchiveVisibility.public


def routes(web: Web) -> APIRouter:
    """/archive, /archive/series/{slug}, /archive/emails/{key}, /articles/{slug}."""
    app = APIRouter()

    @app.get("/archive", response_class=HTMLResponse)
    def archive(
        request: Request,
        session: SessionDep,
        emails: Annotated[str, Query(max_length=64)] = "",
        articles: Annotated[str, Query(max_length=200)] = "",
    ) -> HTMLResponse:
        runs, next_runs = archived_runs(session, emails)
        listed, next_articles = archived_articles(session, articles)
        return web.page(
            request,
            "archive.html",
            title="Archive",
            runs=runs,
            next_runs=next_runs,
            series=archived_series(session) if not articles and not emails else [],
            articles=listed,
            next_articles=next_articles,
            emails_cursor=emails,
            articles_cursor=articles,
        )

    @app.get("/archive/series/{slug}", response_class=HTMLResponse)
    def series_page(request: Request, slug: str, session: SessionDep) -> HTMLResponse:
        series = session.scalar(select(Series).where(Series.slug == slug))
        ordered = published_in_order(session, series.id) if series is not None else []
        if series is None or not ordered:
            return web.message(request, 404, "Not found", "No such series.")
        parts = [
            ArchivedArticle(a.slug, a.title, human_date(a.published_at), i, len(ordered))
            for i, a in enumerate(ordered[:SERIES_PARTS_SHOWN], start=1)
        ]
        return web.page(request, "series.html", title=series.title, series=series, parts=parts)

    @app.get("/archive/emails/{key}", response_class=HTMLResponse)
    def archived_email(request: Request, key: str, session: SessionDep) -> Response:
        run = shown_run(session, key) if len(key) <= 64 else None
        if run is None:
            return web.message(request, 404, "Not found", "No such email.")
        html = archive_html(Snapshot.from_json(run.snapshot or {}))
        return HTMLResponse(html, headers=EMAIL_HEADERS)

    @app.get("/archive/runs/{run_id}")
    def old_email_link(request: Request, run_id: int, session: SessionDep) -> Response:
        # Links in emails sent before archive keys existed: only a public list's email
        # is found by its number (a private one only by its key).
        run = session.get(Run, run_id)
        if (
            run is None
            or shown_run(session, run.archive_key) is None
            or not is_public(session, run)
        ):
            return web.message(request, 404, "Not found", "No such email.")
        return RedirectResponse(f"{web.settings.base_url}{run.archive_path}", status_code=301)

    @app.get("/articles/{slug}", response_class=HTMLResponse)
    def article_page(request: Request, slug: str, session: SessionDep) -> HTMLResponse:
        article = session.scalar(select(Article).where(Article.slug == slug))
        if article is None or not is_published(article):
            return web.message(request, 404, "Not found", "No such article.")
        return web.page(
            request, "article.html", a=article_view(session, article, web.settings.base_url)
        )

    return app

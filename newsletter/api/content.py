"""Articles (JSON, Markdown, feeds) and series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from newsletter.api.common import Caller, ReadSession, decode_cursor, page, scoped, write
from newsletter.api.schemas import (
    ArticleIn,
    ArticleOut,
    FeedImportIn,
    ImportReportOut,
    MarkdownIn,
    Page,
    SeriesIn,
    SeriesInsertIn,
    SeriesOrderIn,
    SeriesOut,
)
from newsletter.content import editing
from newsletter.content.feeds import check_public_host, import_feed
from newsletter.content.importer import import_markdown_texts, save_article_fields
from newsletter.content.series import get_article, get_series

router = APIRouter()
Reader = Annotated[Caller, Depends(scoped("articles:read"))]
Writer = Annotated[Caller, Depends(scoped("articles:write"))]
SeriesReader = Annotated[Caller, Depends(scoped("series:read"))]
SeriesWriter = Annotated[Caller, Depends(scoped("series:write"))]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/articles", response_model=Page[ArticleOut], tags=["articles"])
def list_articles(
    request: Request,
    caller: Reader,
    session: ReadSession,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 50,
) -> JSONResponse:
    rows = editing.list_articles(session, after_id=decode_cursor(cursor), limit=limit)
    items = [ArticleOut(**editing.describe_article(a)) for a in rows]
    return page(request, items, rows[-1].id if rows else None, limit)


@router.get("/articles/{slug}", response_model=ArticleOut, tags=["articles"])
def get_one(slug: str, caller: Reader, session: ReadSession) -> ArticleOut:
    return ArticleOut(**editing.describe_article(get_article(session, slug)))


def _fields(body: ArticleIn) -> dict[str, object]:
    fields = body.model_dump(exclude={"body_markdown"})
    return {key: value for key, value in fields.items() if value not in (None, "", [])}


@router.post("/articles", status_code=201, response_model=ArticleOut, tags=["articles"])
def create(body: ArticleIn, request: Request, caller: Writer) -> Response:
    """Create (or, for a known slug, update) an article from JSON with a Markdown
    body, checked as a Markdown file's front matter is."""

    def work(session: Session) -> tuple[int, ArticleOut, str]:
        article, _ = save_article_fields(session, _fields(body), body.body_markdown)
        out = ArticleOut(**editing.describe_article(article))
        return 201, out, f"/api/v1/articles/{article.slug}"

    return write(request, caller, body, work)


@router.put("/articles/{slug}", response_model=ArticleOut, tags=["articles"])
def update(slug: str, body: ArticleIn, request: Request, caller: Writer) -> Response:
    """Replace an existing article's fields (the slug in the path wins)."""

    def work(session: Session) -> tuple[int, ArticleOut, str]:
        fields = {k: v for k, v in _fields(body).items() if k != "slug"}
        article, _ = save_article_fields(session, fields, body.body_markdown, slug=slug)
        return 200, ArticleOut(**editing.describe_article(article)), ""

    return write(request, caller, body, work)


@router.post("/articles/markdown", response_model=ImportReportOut, tags=["articles"])
def import_markdown(body: MarkdownIn, request: Request, caller: Writer) -> Response:
    """Import Markdown documents with front matter, as `articles import` does files:
    the same slug updates; each problem names the document and the line."""

    def work(session: Session) -> tuple[int, ImportReportOut, str]:
        docs = [(d.name, d.text) for d in body.documents]
        return 200, ImportReportOut(**import_markdown_texts(session, docs).as_json()), ""

    return write(request, caller, body, work)


@router.post("/articles/feed", response_model=ImportReportOut, tags=["articles"])
def import_from_feed(body: FeedImportIn, request: Request, caller: Writer) -> Response:
    """Import an RSS or Atom feed once, by URL (the same entry updates). URLs on
    private or loopback addresses are refused unless NEWSLETTER_ALLOW_PRIVATE_URLS."""
    if not request.app.state.api.settings.allow_private_urls:
        check_public_host(body.url)

    def work(session: Session) -> tuple[int, ImportReportOut, str]:
        report = import_feed(session, body.url, series_slug=body.series)
        return 200, ImportReportOut(**report.as_json()), ""

    return write(request, caller, body, work)


@router.get("/series", response_model=Page[SeriesOut], tags=["series"])
def list_series(caller: SeriesReader, session: ReadSession) -> JSONResponse:
    items = [
        SeriesOut(**editing.describe(session, get_series(session, row["slug"])))
        for row in editing.list_series(session)
    ]
    return JSONResponse(Page[SeriesOut](items=items).model_dump(mode="json"))


@router.post("/series", status_code=201, response_model=SeriesOut, tags=["series"])
def create_series(body: SeriesIn, request: Request, caller: SeriesWriter) -> Response:
    def work(session: Session) -> tuple[int, SeriesOut, str]:
        series = editing.create_series(session, body.slug, body.title, body.description)
        return 201, SeriesOut(**editing.describe(session, series)), f"/api/v1/series/{body.slug}"

    return write(request, caller, body, work)


@router.get("/series/{slug}", response_model=SeriesOut, tags=["series"])
def get_series_one(slug: str, caller: SeriesReader, session: ReadSession) -> SeriesOut:
    return SeriesOut(**editing.describe(session, get_series(session, slug)))


@router.put("/series/{slug}/order", response_model=SeriesOut, tags=["series"])
def reorder(slug: str, body: SeriesOrderIn, request: Request, caller: SeriesWriter) -> Response:
    """Set the order of the whole series (every article, once)."""

    def work(session: Session) -> tuple[int, SeriesOut, str]:
        editing.reorder(session, slug, body.articles)
        return 200, SeriesOut(**editing.describe(session, get_series(session, slug))), ""

    return write(request, caller, body, work)


@router.post("/series/{slug}/articles", response_model=SeriesOut, tags=["series"])
def insert(slug: str, body: SeriesInsertIn, request: Request, caller: SeriesWriter) -> Response:
    """Put an article into the series at a position (it leaves any other series)."""

    def work(session: Session) -> tuple[int, SeriesOut, str]:
        editing.insert(session, slug, body.article, body.at)
        return 200, SeriesOut(**editing.describe(session, get_series(session, slug))), ""

    return write(request, caller, body, work)


@router.delete("/series/{slug}/articles/{article}", response_model=SeriesOut, tags=["series"])
def remove(slug: str, article: str, request: Request, caller: SeriesWriter) -> Response:
    """Move an article out of the series; the others close the gap."""

    def work(session: Session) -> tuple[int, SeriesOut, str]:
        editing.move_out(session, slug, article)
        return 200, SeriesOut(**editing.describe(session, get_series(session, slug))), ""

    return write(request, caller, None, work)

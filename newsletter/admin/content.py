"""Content: articles (import Markdown files or a feed, read as a web page), series
(drag to reorder, or the Up/Down buttons from the keyboard; each article's previous
and next as readers see them), feeds, drip sequences, and stored templates (the
sandbox's errors at their line, a preview with sample data, every version kept)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from newsletter.admin.common import (
    PREFIX,
    PREVIEW_CSP,
    Missing,
    ReadSession,
    Viewer,
    console_of,
    list_named,
    needs,
    redirect,
    render,
    write,
)
from newsletter.admin.i18n import _
from newsletter.audience.lists import list_lists
from newsletter.campaigns import templates as stored
from newsletter.campaigns.models import Template
from newsletter.content import editing, feeds
from newsletter.content.feeds import check_public_host, import_feed, list_feeds
from newsletter.content.importer import import_markdown_texts
from newsletter.content.series import get_article, get_series, series_place
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.importing import ImportReport
from newsletter.rendering.preview import fill_html
from newsletter.sequences.service import (
    create_sequence,
    describe_sequence,
    get_sequence,
    list_sequences,
    members_by_position,
    set_paused,
)
from newsletter.services.segments import list_segments

router = APIRouter()
Reader = Annotated[Viewer, Depends(needs("articles:read"))]
Writer = Annotated[Viewer, Depends(needs("articles:write"))]
SeriesReader = Annotated[Viewer, Depends(needs("series:read"))]
SeriesWriter = Annotated[Viewer, Depends(needs("series:write"))]
TemplateReader = Annotated[Viewer, Depends(needs("templates:read"))]
TemplateWriter = Annotated[Viewer, Depends(needs("templates:write"))]
MAX_DOCUMENT = 2_000_000
MAX_DOCUMENTS = 200
_LINE = re.compile(r"\bline (\d+)")
_PART = re.compile(r", (subject|html|text)\b")


# --- articles ---------------------------------------------------------------------------


@router.get("/articles")
def articles(request: Request, viewer: Reader, session: ReadSession) -> Response:
    return render(
        request,
        "articles.html",
        viewer,
        title=_("Articles"),
        articles=editing.list_articles(session),
        feeds=list_feeds(session),
    )


def _report_notice(report: ImportReport) -> str:
    lines = [report.summary()]
    lines += [f"{p.where}: {p.reason}" for p in report.problems[:5]]
    return " · ".join(lines)


@router.post("/articles/import")
def import_articles(
    request: Request,
    viewer: Writer,
    files: Annotated[list[UploadFile], File()],
) -> Response:
    """Markdown files with front matter; the same slug updates; each problem names
    the file and the line."""
    if len(files) > MAX_DOCUMENTS:
        raise InvalidInputError(_("At most {n} files at once.").format(n=MAX_DOCUMENTS))
    documents = []
    for upload in files:
        data = upload.file.read(MAX_DOCUMENT + 1)
        name = (upload.filename or "upload.md")[:300]
        if len(data) > MAX_DOCUMENT:
            raise InvalidInputError(_("{name}: larger than 2 MB.").format(name=name))
        try:
            documents.append((name, data.decode("utf-8-sig")))
        except UnicodeDecodeError as exc:
            raise InvalidInputError(_("{name}: not UTF-8 text.").format(name=name)) from exc
    report = write(request, viewer, lambda session: import_markdown_texts(session, documents))
    return redirect(f"{PREFIX}/articles", _report_notice(report))


@router.post("/articles/feed")
def import_from_feed(
    request: Request,
    viewer: Writer,
    url: Annotated[str, Form(max_length=2000)],
    series: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """An RSS or Atom feed, once, by URL (never a private or loopback address unless
    NEWSLETTER_ALLOW_PRIVATE_URLS)."""
    if not console_of(request).settings.allow_private_urls:
        check_public_host(url.strip())
    report = write(
        request,
        viewer,
        lambda session: import_feed(session, url.strip(), series_slug=series.strip() or None),
    )
    return redirect(f"{PREFIX}/articles", _report_notice(report))


@router.post("/feeds")
def add_feed(
    request: Request,
    viewer: Writer,
    url: Annotated[str, Form(max_length=2000)],
    every: Annotated[str, Form(max_length=20)] = "1h",
    series: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """A feed the scheduler polls (with ETag/Last-Modified) and imports from."""
    if not console_of(request).settings.allow_private_urls:
        check_public_host(url.strip())
    write(
        request,
        viewer,
        lambda session: feeds.add_feed(
            session,
            url,
            series_slug=series.strip() or None,
            every_seconds=feeds.parse_every(every),
        ),
    )
    return redirect(f"{PREFIX}/articles", _("Feed added: the scheduler polls it now."))


@router.post("/feeds/{feed_id}/poll")
def poll_feed(feed_id: int, request: Request, viewer: Writer) -> Response:
    write(request, viewer, lambda session: feeds.poll_soon(session, feed_id))
    return redirect(f"{PREFIX}/articles", _("The scheduler polls it at its next tick."))


@router.get("/articles/{slug}")
def article(slug: str, request: Request, viewer: Reader, session: ReadSession) -> Response:
    """The article as a web page (its sanitised body), with its place in its series."""
    found = get_article(session, slug)
    return render(
        request,
        "article.html",
        viewer,
        title=found.title,
        article=found,
        place=series_place(session, found),
    )


@router.post("/articles/{slug}/edit")
async def edit_article(slug: str, request: Request, viewer: Writer) -> Response:
    """The article's front matter fields (its body stays as imported)."""
    form = await request.form()
    fields = {name: str(form.get(name) or "") for name in editing.ARTICLE_FIELDS}

    def work(session: Session) -> None:
        editing.update_article_fields(session, slug, fields)

    await run_in_threadpool(write, request, viewer, work)
    return redirect(f"{PREFIX}/articles/{slug}", _("Saved."))


# --- series -----------------------------------------------------------------------------


@router.get("/series")
def series_list(request: Request, viewer: SeriesReader, session: ReadSession) -> Response:
    return render(
        request, "series_list.html", viewer, title=_("Series"), series=editing.list_series(session)
    )


@router.get("/series/{slug}")
def series_page(
    slug: str, request: Request, viewer: SeriesReader, session: ReadSession
) -> Response:
    found = get_series(session, slug)
    ordered = editing.in_order(session, found)
    places = {a.slug: series_place(session, a) for a in ordered}
    return render(
        request,
        "series.html",
        viewer,
        title=_("Series “{title}”").format(title=found.title),
        series=found,
        articles=ordered,
        places=places,
    )


@router.post("/series/{slug}/order")
def save_order(
    slug: str,
    request: Request,
    viewer: SeriesWriter,
    order: Annotated[str, Form(max_length=20000)],
) -> Response:
    """The whole order at once (what dragging produces)."""
    slugs = [s.strip() for s in order.split(",") if s.strip()]
    write(request, viewer, lambda session: editing.reorder(session, slug, slugs))
    return redirect(f"{PREFIX}/series/{slug}", _("Order saved."))


@router.post("/series/{slug}/move")
def move(
    slug: str,
    request: Request,
    viewer: SeriesWriter,
    article: Annotated[str, Form(max_length=200)],
    offset: Annotated[int, Form(ge=-1000, le=1000)],
) -> Response:
    """One article up or down (the keyboard way)."""
    write(request, viewer, lambda session: editing.move(session, slug, article, offset))
    response = redirect(f"{PREFIX}/series/{slug}#item-{article}", _("Order saved."))
    return response


# --- sequences --------------------------------------------------------------------------

SequenceReader = Annotated[Viewer, Depends(needs("sequences:read"))]
SequenceWriter = Annotated[Viewer, Depends(needs("sequences:write"))]


@router.get("/sequences")
def sequences(request: Request, viewer: SequenceReader, session: ReadSession) -> Response:
    found = list_sequences(session)
    rows = [
        (describe_sequence(session, s), members_by_position(session, s), s.series.title)
        for s in found
    ]
    return render(
        request,
        "sequences.html",
        viewer,
        title=_("Drip sequences"),
        rows=rows,
        series=editing.list_series(session),
        lists=list_lists(session),
        segments=list_segments(session) if viewer.may("segments:read") else [],
    )


@router.post("/sequences")
def new_sequence(
    request: Request,
    viewer: SequenceWriter,
    series: Annotated[str, Form(max_length=200)],
    list: Annotated[str, Form(max_length=200)],
    every: Annotated[str, Form(max_length=20)] = "",
    cron: Annotated[str, Form(max_length=100)] = "",
    timezone: Annotated[str, Form(max_length=64)] = "UTC",
    segment: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Send a series to a list's members (those matching a segment, if chosen) one
    article at a time, every period or by a cron read in each reader's zone."""
    postal = console_of(request).settings.postal_address

    def work(session: Session) -> None:
        viewer.require_lists([list_named(session, list).id])
        create_sequence(
            session,
            series_slug=series,
            list_slug=list,
            every=every.strip() or None,
            cron=cron.strip() or None,
            timezone=timezone.strip() or "UTC",
            postal_address=postal,
            segment=segment or None,
        )

    write(request, viewer, work)
    return redirect(f"{PREFIX}/sequences", _("Sequence created."))


@router.post("/sequences/{sequence_id}/pause")
def pause_sequence(
    sequence_id: int,
    request: Request,
    viewer: SequenceWriter,
    paused: Annotated[str, Form(pattern="^(yes|no)$")],
) -> Response:
    def work(session: Session) -> None:
        viewer.require_lists([get_sequence(session, sequence_id).list_id])
        set_paused(session, sequence_id, paused == "yes")

    write(request, viewer, work)
    return redirect(f"{PREFIX}/sequences", _("Paused.") if paused == "yes" else _("Resumed."))


# --- templates --------------------------------------------------------------------------


@router.get("/templates")
def templates(request: Request, viewer: TemplateReader, session: ReadSession) -> Response:
    return render(
        request,
        "templates.html",
        viewer,
        title=_("Templates"),
        templates=stored.list_templates(session),
    )


def _template_named(session: Session, name: str) -> Template:
    """The stored template of this name, or a 404 page that leads to the templates."""
    try:
        return stored.get_template(session, name)
    except NotFoundError:
        raise Missing(
            _("There is no template “{name}”.").format(name=name),
            PREFIX + "/templates",
            _("See the templates, or create one"),
        ) from None


def _problem_at(message: str) -> tuple[str, int]:
    """The part and line an error of the sandbox names ("", 0 when it names none)."""
    part = _PART.search(message)
    line = _LINE.search(message)
    return (part.group(1) if part else "", int(line.group(1)) if line else 0)


def _editor(
    request: Request,
    viewer: Viewer,
    session: Session,
    name: str,
    values: dict[str, str],
    *,
    error: str = "",
    status: int = 200,
) -> Response:
    template = session.query(Template).filter_by(name=name).one_or_none() if name else None
    part, line = _problem_at(error) if error else ("", 0)
    return render(
        request,
        "template_editor.html",
        viewer,
        title=_("Template “{name}”").format(name=name) if name else _("New template"),
        name=name,
        values=values,
        error=error,
        error_part=part,
        error_line=line,
        versions=stored.template_versions(session, template) if template else [],
        status=status,
    )


@router.get("/templates/new")
def new_template(request: Request, viewer: TemplateWriter, session: ReadSession) -> Response:
    return _editor(request, viewer, session, "", {"subject": "", "html": "", "text": ""})


@router.get("/templates/{name}")
def template_page(
    name: str, request: Request, viewer: TemplateReader, session: ReadSession
) -> Response:
    found = _template_named(session, name)
    values = {"subject": found.subject, "html": found.html, "text": found.text}
    return _editor(request, viewer, session, name, values)


@router.post("/templates/save")
def save_template(
    request: Request,
    viewer: TemplateWriter,
    session: ReadSession,
    name: Annotated[str, Form(max_length=200)],
    html: Annotated[str, Form(max_length=500_000)],
    subject: Annotated[str, Form(max_length=10_000)] = "",
    text: Annotated[str, Form(max_length=500_000)] = "",
) -> Response:
    """Saved once the sandbox renders it with the sample emails; a refusal shows the
    error at its line and keeps what was typed."""
    try:
        write(request, viewer, lambda db: stored.save_template(db, name, subject, html, text))
    except InvalidInputError as exc:
        values = {"subject": subject, "html": html, "text": text}
        return _editor(request, viewer, session, name, values, error=str(exc), status=422)
    return redirect(f"{PREFIX}/templates/{name}", _("Saved as a new version."))


@router.get("/templates/{name}/preview.html")
def template_preview(
    name: str, request: Request, viewer: TemplateReader, session: ReadSession
) -> Response:
    """The template rendered with the sample email, for the preview frame."""
    snapshot = stored.sample_preview(_template_named(session, name))
    return HTMLResponse(
        fill_html(snapshot),
        headers={"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"},
    )


@router.get("/templates/{name}/diff/{version}")
def template_diff(
    name: str, version: int, request: Request, viewer: TemplateReader, session: ReadSession
) -> Response:
    """What version N changed from version N-1."""
    found = _template_named(session, name)
    newer = stored.get_version(session, found, version)
    older = stored.get_version(session, found, version - 1) if version > 1 else None
    lines = stored.diff_versions(older, newer) if older else []
    return render(
        request,
        "template_diff.html",
        viewer,
        title=_("Template “{name}”, version {n}").format(name=name, n=version),
        name=name,
        version=newer,
        lines=lines,
        first=older is None,
    )


@router.post("/templates/{name}/restore")
def restore(
    name: str,
    request: Request,
    viewer: TemplateWriter,
    version: Annotated[int, Form(ge=1)],
) -> Response:
    def work(session: Session) -> None:
        stored.restore_version(session, _template_named(session, name).name, version)

    write(request, viewer, work)
    return redirect(
        f"{PREFIX}/templates/{name}", _("Version {n} restored as a new version.").format(n=version)
    )

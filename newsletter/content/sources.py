"""`articles import`: every kind of source in one call, committed once (or not at all).

A source is a Markdown file or folder (our front matter, Jekyll, Hugo), a WordPress
export (WXR), a Ghost export (JSON), or an RSS/Atom feed by file or URL. Each is told
apart by its content, not only its name: a WordPress export is RSS too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from newsletter.content.feeds import FeedFetcher, fetch_feed, import_feed, is_feed_source
from newsletter.content.ghost import is_ghost_export, read_ghost_export
from newsletter.content.importer import audit_import, read_markdown, save_parsed
from newsletter.content.posts import ParsedArticle
from newsletter.content.text import is_site_url
from newsletter.content.wordpress import is_wordpress_export, read_wordpress_export
from newsletter.errors import InvalidInputError, Remedy
from newsletter.importing import ArticleImportReport, import_transaction

SNIFF_BYTES = 4096


def import_sources(
    session: Session,
    sources: Sequence[str],
    *,
    series_slug: str | None = None,
    site_url: str = "",
    dry_run: bool = False,
    fetch: FeedFetcher = fetch_feed,
) -> ArticleImportReport:
    """Import every source, then commit; with `dry_run` roll back instead, so the
    report says what the import would do and nothing is written.

    `series_slug` puts the articles of feeds into that series. A feed that cannot be
    fetched or read raises FeedError and nothing at all is imported (the caller's
    session rolls back). `site_url`, the old site's address, makes relative links and
    images of posts and exports absolute. Feeds given by URL are fetched with `fetch`.
    """
    if site_url and not is_site_url(site_url):
        raise InvalidInputError(
            f"site URL: must be an http(s) address, not {site_url!r}",
            remedy=Remedy("give", "article import", field="site_url"),
        )
    report = ArticleImportReport(dry_run=dry_run)
    markdown: list[Path] = []
    articles: list[ParsedArticle] = []
    with import_transaction(session, dry_run=dry_run):
        for source in sources:
            kind = source_kind(source)
            if kind == "markdown":
                markdown.append(Path(source))
            elif kind == "feed":
                report.merge(import_feed(session, source, series_slug=series_slug, fetch=fetch))
            else:
                reader = read_wordpress_export if kind == "wordpress" else read_ghost_export
                reading = reader(Path(source), site_url)
                report.problems.extend(reading.errors)
                report.warnings.extend(reading.warnings)
                articles.extend(reading.articles)
        articles.extend(read_markdown(markdown, report, site_url))
        # Saved together, so two sources giving one slug are told apart, not merged.
        save_parsed(session, articles, report)
        if markdown or articles:
            audit_import(session, report)
    return report


def source_kind(source: str) -> str:
    """Which reader a source needs ("wordpress", "ghost", "feed" or "markdown"), told
    from what the source holds."""
    path = Path(source)
    if path.is_file():
        start = _start(path)
        if is_wordpress_export(start):
            return "wordpress"
        if path.suffix.lower() == ".json":
            return "ghost"  # the Ghost reader says what is wrong with any other JSON
        if start.lstrip().startswith("{") and _looks_like_ghost(path):
            return "ghost"
    return "feed" if is_feed_source(source) else "markdown"


def _start(path: Path) -> str:
    try:
        with path.open("rb") as file:
            return file.read(SNIFF_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def _looks_like_ghost(path: Path) -> bool:
    try:
        return is_ghost_export(json.loads(path.read_bytes()))
    except (OSError, ValueError):
        return False

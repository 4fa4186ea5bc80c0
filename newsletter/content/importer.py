"""Import articles from Markdown files with front matter, and save parsed articles.

A file looks like this (YAML between '---' lines, or TOML between '+++' lines; the
Jekyll and Hugo fields are read too, see posts.py)::

    ---
    title: "What happens at an infusion appointment"
    slug: infusion-appointment          # optional: defaults to the file name
    published: 2026-09-14T09:00:00Z     # optional: without a date the article is a draft
    series: understanding-treatment     # optional: created on first mention
    position: 2                         # optional: appended to the series when missing
    tags: [ketamine, infusion]
    ---
    The body, in Markdown.

Reading a file (`posts.parse_article_file`) never touches the database and reports
every problem it finds; saving (`save_parsed`) upserts by slug, one savepoint per
article, so a rejected article leaves nothing behind and never stops the others. The
WordPress and Ghost importers save through the same steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.content.models import Article, Series
from newsletter.content.posts import (
    ParsedArticle,
    parse_article_fields,
    parse_article_file,
    parse_article_text,
)
from newsletter.errors import InvalidInputError, NotFoundError, Problem
from newsletter.importing import ArticleImportReport, ImportReport, import_transaction

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
# A Hugo section's list page, not an article.
SECTION_PAGE_NAMES = frozenset({"_index.md", "_index.markdown"})
HUGO_CONFIGS = tuple(
    f"{name}.{suffix}" for name in ("hugo", "config") for suffix in ("toml", "yaml", "yml", "json")
)


class Outcome(Enum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"


def import_articles(
    session: Session, paths: Sequence[Path], *, dry_run: bool = False, site_url: str = ""
) -> ArticleImportReport:
    """Create or update one article per Markdown file, then commit (roll back with
    `dry_run`: the report says what would have happened, nothing is written).

    Each path is a file or a folder searched recursively for *.md and *.markdown
    (sorted by path; names starting with a dot are skipped). A Jekyll site's folder
    means its `_posts` and `_drafts`, a Hugo site's folder its `content`. Articles are
    matched by slug, so importing again updates them and never duplicates. A file with
    an error is skipped whole and reported in `problems` ("path:line" when the line is
    known); `warnings` are about files that were imported all the same. `site_url`
    (the old site's address) makes relative links and images absolute.
    """
    report = ArticleImportReport(dry_run=dry_run)
    with import_transaction(session, dry_run=dry_run):
        import_markdown(session, paths, report, site_url=site_url)
    return report


def import_markdown(
    session: Session, paths: Sequence[Path], report: ArticleImportReport, site_url: str = ""
) -> None:
    """The Markdown files under `paths`, saved into `report`; no commit."""
    save_parsed(session, read_markdown(paths, report, site_url), report)


def read_markdown(
    paths: Sequence[Path], report: ArticleImportReport, site_url: str = ""
) -> list[ParsedArticle]:
    """The valid articles of the Markdown files under `paths`; the others and the
    warnings go into `report`."""
    articles = []
    for path in find_markdown_files(paths, report.problems):
        reading = parse_article_file(path, site_url=site_url)
        report.problems.extend(reading.errors)
        report.warnings.extend(reading.warnings)
        if reading.article is not None:
            articles.append(reading.article)
    return articles


def save_parsed(
    session: Session, articles: Iterable[ParsedArticle], report: ArticleImportReport
) -> None:
    """Save each article in a savepoint of its own and count it; no commit.

    A second article with a slug already used in this batch is skipped, and so is one
    the database refuses; both are reported.
    """
    slug_owners: dict[str, str] = {}
    for article in articles:
        owner = slug_owners.setdefault(article.slug, article.where)
        if owner != article.where:
            reason = f"slug '{article.slug}' is already used by {owner} in this import; skipped"
            report.problems.append(Problem(article.where, reason))
            continue
        try:
            with session.begin_nested():
                outcome = save_article(session, article)
        except (IntegrityError, DataError) as exc:
            # A concurrent import of the same slug, or a value the database refuses.
            report.problems.append(Problem(article.where, f"could not be saved: {exc.orig}"))
            continue
        count_outcome(report, outcome)
        if article.published_at is None:
            report.drafts += 1


def import_markdown_texts(
    session: Session, documents: Sequence[tuple[str, str]], site_url: str = ""
) -> ArticleImportReport:
    """Like `import_articles`, for Markdown documents given as (name, text) rather than
    files (an upload): problems name the document and line. Flushes; no commit."""
    report = ArticleImportReport()
    articles = []
    for name, text in documents:
        reading = parse_article_text(text, Path(name), site_url=site_url)
        report.problems.extend(reading.errors)
        report.warnings.extend(reading.warnings)
        if reading.article is not None:
            articles.append(replace(reading.article, source=f"upload:{name}"[:2000]))
    save_parsed(session, articles, report)
    audit_import(session, report)
    return report


def audit_import(session: Session, report: ImportReport) -> None:
    """One audit entry for an import of articles (files, exports or uploads)."""
    audit.record(
        session,
        "articles.import",
        detail={
            "documents": report.imported + report.skipped,
            "created": report.created,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "problems": len(report.problems),
        },
    )


def save_article_fields(
    session: Session, fields: Mapping[str, Any], body_markdown: str, slug: str | None = None
) -> tuple[Article, Outcome]:
    """Create or update one article from JSON fields (the front-matter names, with
    `published` an ISO time and `tags` a list) and a Markdown body; flushes.

    With `slug`, the article must exist (an update of it). Raises InvalidInputError
    naming every field that is wrong."""
    data = {key: value for key, value in fields.items() if value is not None}
    if slug is not None:
        if session.scalar(select(Article.id).where(Article.slug == slug)) is None:
            raise NotFoundError(f"no article '{slug}'")
        data["slug"] = slug
    if "slug" not in data:
        raise InvalidInputError("slug is missing")
    reading = parse_article_fields(data, body_markdown)
    article = reading.article
    if article is None:
        errors = [p.reason for p in reading.errors]
        raise InvalidInputError("; ".join(errors) or "the article is not valid")
    outcome = save_article(session, replace(article, source="api"))
    saved = session.scalar(select(Article).where(Article.slug == article.slug))
    assert saved is not None
    audit.record(
        session,
        f"article.{outcome.value}" if outcome is not Outcome.unchanged else "article.save",
        f"article:{saved.slug}",
        after={"title": saved.title, "published_at": saved.published_at},
    )
    return saved, outcome


def find_markdown_files(paths: Sequence[Path], problems: list[Problem]) -> list[Path]:
    """The files to import, each once, in argument order then sorted by path.

    A path that does not exist is added to `problems`, and so is a Hugo section page
    (`_index.md`), which lists articles rather than being one.
    """
    found: dict[Path, Path] = {}
    for root in paths:
        if root.is_dir():
            candidates = [
                path for folder in site_content_folders(root) for path in _markdown_under(folder)
            ]
        elif root.is_file():
            candidates = [root]
        else:
            problems.append(Problem(str(root), "no such file or folder"))
            continue
        for path in candidates:
            if path.name.lower() in SECTION_PAGE_NAMES:
                reason = "a Hugo section page (_index.md) lists articles; not imported"
                problems.append(Problem(str(path), reason))
                continue
            found.setdefault(path.resolve(), path)
    return list(found.values())


def site_content_folders(folder: Path) -> list[Path]:
    """Where the posts of `folder` are: `_posts` and `_drafts` of a Jekyll site, `content`
    of a Hugo site, else the folder itself (so themes, layouts, READMEs and archetypes
    of a whole site checkout are not read as articles)."""
    jekyll = [folder / name for name in ("_posts", "_drafts") if (folder / name).is_dir()]
    if jekyll:
        return jekyll
    if (folder / "content").is_dir() and any((folder / name).is_file() for name in HUGO_CONFIGS):
        return [folder / "content"]
    return [folder]


def _markdown_under(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in MARKDOWN_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def save_article(session: Session, parsed: ParsedArticle) -> Outcome:
    """Insert the article, or update the one with the same slug; say which.

    The series is created when it does not exist yet, and retitled when the article
    gives a different series_title.
    """
    article = session.scalar(select(Article).where(Article.slug == parsed.slug))
    series = (
        ensure_series(session, parsed.series_slug, parsed.series_title)
        if parsed.series_slug is not None
        else None
    )
    values: dict[str, Any] = {
        "slug": parsed.slug,
        "title": parsed.title,
        "summary": parsed.summary,
        "body_html": parsed.body_html,
        "author": parsed.author,
        "url": parsed.url,
        "image": parsed.image,
        "image_alt": parsed.image_alt,
        "published_at": parsed.published_at,
        "tags": list(parsed.tags),
        "series_id": series.id if series is not None else None,
        "position": _position(session, parsed, series, article),
        "source": parsed.source[:2000],
    }
    return upsert_article(session, article, values)


def upsert_article(session: Session, article: Article | None, values: Mapping[str, Any]) -> Outcome:
    """Insert a new article from `values` when `article` is None, else set the values
    that differ from it; flush, and say which.

    The step shared by every importer: the caller finds the article (by slug, by feed
    guid…) and decides the values; an article whose values all match is left untouched,
    so its `updated_at` does not move.
    """
    if article is None:
        session.add(Article(**values))
        session.flush()
        return Outcome.created
    changed = {key: value for key, value in values.items() if getattr(article, key) != value}
    for key, value in changed.items():
        setattr(article, key, value)
    session.flush()
    return Outcome.updated if changed else Outcome.unchanged


def ensure_series(session: Session, slug: str, title: str | None = None) -> Series:
    """The series with this slug, created when missing (titled from the slug unless
    `title` is given) and retitled when `title` differs."""
    series = session.scalar(select(Series).where(Series.slug == slug))
    if series is None:
        series = Series(slug=slug, title=title or slug.replace("-", " ").title())
        session.add(series)
        session.flush()
    elif title and series.title != title:
        series.title = title
    return series


def next_position(session: Session, series: Series) -> int:
    """The position after the last article of the series (1 for an empty series)."""
    last = session.scalar(select(func.max(Article.position)).where(Article.series_id == series.id))
    return (last or 0) + 1


def _position(
    session: Session, parsed: ParsedArticle, series: Series | None, article: Article | None
) -> int | None:
    """The given position; else the article's current one; else after the series' last."""
    if series is None:
        return None
    if parsed.position is not None:
        return parsed.position
    if article is not None and article.series_id == series.id and article.position is not None:
        return article.position
    return next_position(session, series)


def count_outcome(report: ImportReport, outcome: Outcome) -> None:
    """Add one item with this outcome to the report's counts."""
    if outcome is Outcome.created:
        report.created += 1
    elif outcome is Outcome.updated:
        report.updated += 1
    else:
        report.unchanged += 1

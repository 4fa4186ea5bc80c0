"""Editing series: create, reorder, insert an article at a position, move one out.

Positions are kept contiguous (1..n) after every change, so "Part k of n" and the
previous/next links, derived from the order, always follow what staff see here.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.content.models import Article, Series
from newsletter.content.series import get_article, get_series, is_published
from newsletter.errors import InvalidInputError, Remedy

SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def in_order(session: Session, series: Series) -> list[Article]:
    """Every article of the series (drafts too), by position then id."""
    return list(
        session.scalars(
            select(Article)
            .where(Article.series_id == series.id)
            .order_by(Article.position.asc().nulls_last(), Article.id)
        )
    )


def _renumber(articles: list[Article]) -> None:
    for index, article in enumerate(articles, start=1):
        article.position = index


def create_series(session: Session, slug: str, title: str, description: str = "") -> Series:
    if not SLUG.fullmatch(slug):
        raise InvalidInputError(f"series slug {slug!r}: use lowercase letters, digits and -")
    if session.scalar(select(Series.id).where(Series.slug == slug)):
        raise InvalidInputError(f"series {slug!r} exists already")
    if not title.strip():
        raise InvalidInputError("title: must not be empty")
    series = Series(slug=slug, title=title.strip(), description=description)
    session.add(series)
    session.flush()
    audit.record(session, "series.create", f"series:{slug}", after={"title": series.title})
    return series


def _audit_order(session: Session, action: str, series: Series, before: list[str]) -> None:
    after = [a.slug for a in in_order(session, series)]
    audit.record(
        session, action, f"series:{series.slug}", before={"order": before}, after={"order": after}
    )


def reorder(session: Session, series_slug: str, article_slugs: list[str]) -> list[Article]:
    """Put the series' articles in exactly this order (every article, once)."""
    series = get_series(session, series_slug)
    current = {a.slug: a for a in in_order(session, series)}
    if sorted(article_slugs) != sorted(current):
        missing = sorted(set(current) - set(article_slugs))
        extra = sorted(set(article_slugs) - set(current))
        raise InvalidInputError(
            "list every article of the series exactly once"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; not in the series: {', '.join(extra)}" if extra else "")
        )
    ordered = [current[slug] for slug in article_slugs]
    _renumber(ordered)
    session.flush()
    _audit_order(session, "series.reorder", series, list(current))
    return ordered


def move(session: Session, series_slug: str, article_slug: str, offset: int) -> list[Article]:
    """Move one article `offset` places (-1: up one, 1: down one) within its series;
    at either end it stays where it is. The keyboard way to reorder."""
    series = get_series(session, series_slug)
    slugs = [a.slug for a in in_order(session, series)]
    if article_slug not in slugs:
        raise InvalidInputError(f"article {article_slug!r} is not in series {series_slug!r}")
    at = slugs.index(article_slug)
    to = min(max(at + offset, 0), len(slugs) - 1)
    if to == at:
        return in_order(session, series)
    slugs.insert(to, slugs.pop(at))
    return reorder(session, series_slug, slugs)


def insert(session: Session, series_slug: str, article_slug: str, at: int) -> list[Article]:
    """Put the article into the series at position `at` (1-based), shifting the rest."""
    series = get_series(session, series_slug)
    article = get_article(session, article_slug)
    before = in_order(session, series)
    articles = [a for a in before if a.id != article.id]
    if not 1 <= at <= len(articles) + 1:
        raise InvalidInputError(
            f"at: must be between 1 and {len(articles) + 1}",
            remedy=Remedy("give", "series insert", field="at"),
        )
    articles.insert(at - 1, article)
    article.series_id = series.id
    _renumber(articles)
    session.flush()
    _audit_order(session, "series.insert", series, [a.slug for a in before])
    return articles


def move_out(session: Session, series_slug: str, article_slug: str) -> list[Article]:
    """Take the article out of the series; the others close the gap."""
    series = get_series(session, series_slug)
    article = get_article(session, article_slug)
    if article.series_id != series.id:
        raise InvalidInputError(f"article {article_slug!r} is not in series {series_slug!r}")
    before = in_order(session, series)
    article.series_id = None
    article.position = None
    rest = [a for a in before if a.id != article.id]
    _renumber(rest)
    session.flush()
    _audit_order(session, "series.remove", series, [a.slug for a in before])
    return rest


def describe(session: Session, series: Series) -> dict[str, Any]:
    articles = in_order(session, series)
    return {
        "slug": series.slug,
        "title": series.title,
        "articles": [
            {
                "position": a.position,
                "slug": a.slug,
                "title": a.title,
                "published": is_published(a),
            }
            for a in articles
        ],
    }


def list_series(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Series, func.count(Article.id))
        .outerjoin(Article, Article.series_id == Series.id)
        .group_by(Series.id)
        .order_by(Series.slug)
    ).all()
    return [{"slug": s.slug, "title": s.title, "articles": n} for s, n in rows]


def describe_article(article: Article) -> dict[str, Any]:
    return {
        "slug": article.slug,
        "title": article.title,
        "summary": article.summary,
        "author": article.author,
        "url": article.url,
        "image": article.image,
        "published_at": article.published_at.isoformat() if article.published_at else None,
        "tags": list(article.tags or []),
        "series": article.series.slug if article.series else None,
        "position": article.position,
    }


def list_articles(session: Session, after_id: int = 0, limit: int | None = None) -> list[Article]:
    """Articles newest first (drafts first of all) for people; by id for paging."""
    if limit is None:
        query = select(Article).order_by(Article.published_at.desc().nulls_first(), Article.id)
        return list(session.scalars(query))
    query = select(Article).where(Article.id > after_id).order_by(Article.id).limit(limit)
    return list(session.scalars(query))


ARTICLE_FIELDS = ("title", "summary", "author", "url", "image", "image_alt", "published", "tags")


def update_article_fields(session: Session, slug: str, fields: dict[str, str]) -> Article:
    """Change an article's front matter fields (its body stays as imported):
    `published` an ISO date or time (empty: a draft), `tags` comma-separated. A run
    already started keeps what it froze; later runs and the archive see the change."""
    from newsletter.content.posts import parse_moment
    from newsletter.content.text import is_site_url

    article = get_article(session, slug)
    before = describe_article(article)
    title = fields.get("title", article.title).strip()
    if not title or len(title) > 500:
        raise InvalidInputError("title: give 1 to 500 characters")
    published_text = fields.get("published", "").strip()
    published = parse_moment(published_text) if published_text else None
    if published_text and published is None:
        raise InvalidInputError(
            f"published: {published_text!r} is not a date like 2026-12-07 or 2026-12-07T09:00"
        )
    for name in ("url", "image"):
        value = fields.get(name, "").strip()
        if value and not is_site_url(value):
            raise InvalidInputError(f"{name}: {value!r} is not an http(s) address")
    article.title = title
    article.summary = fields.get("summary", article.summary).strip()[:5000]
    article.author = fields.get("author", article.author).strip()[:300]
    article.url = fields.get("url", article.url).strip()
    article.image = fields.get("image", article.image).strip()
    article.image_alt = fields.get("image_alt", article.image_alt).strip()[:1000]
    article.published_at = published
    tags = [t.strip() for t in fields.get("tags", ",".join(article.tags or [])).split(",")]
    article.tags = [t for t in dict.fromkeys(tags) if t]
    session.flush()
    after = describe_article(article)
    if after != before:
        audit.record(session, "article.update", f"article:{slug}", before=before, after=after)
    return article

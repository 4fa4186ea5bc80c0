"""Reading articles and series: lookups by slug and an article's place in its series.

The order of a series is never stored as links between articles: previous and next
are derived from (position, id) among the articles published by now, so a draft or
a future article is skipped until its time comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.content.models import Article, Series
from newsletter.db import utcnow
from newsletter.errors import NotFoundError


@dataclass(frozen=True)
class SeriesPlace:
    """Where a published article stands among the published articles of its series."""

    series_slug: str
    series_title: str
    index: int  # 1-based
    total: int
    previous: Article | None
    next: Article | None


def get_series(session: Session, slug: str) -> Series:
    """The series with this slug; NotFoundError when there is none."""
    series = session.scalar(select(Series).where(Series.slug == slug))
    if series is None:
        raise NotFoundError(f"no series '{slug}'")
    return series


def get_article(session: Session, slug: str) -> Article:
    """The article with this slug; NotFoundError when there is none."""
    article = session.scalar(select(Article).where(Article.slug == slug))
    if article is None:
        raise NotFoundError(f"no article '{slug}'")
    return article


def is_published(article: Article, now: datetime | None = None) -> bool:
    """True when the article has a publication time that is not in the future."""
    return article.published_at is not None and article.published_at <= (now or utcnow())


def published_in_order(
    session: Session, series_id: int, *, now: datetime | None = None
) -> list[Article]:
    """The series' articles published by `now` (default: the current time).

    Ordered by position then id; articles without a position come last.
    """
    moment = now or utcnow()
    return list(
        session.scalars(
            select(Article)
            .where(
                Article.series_id == series_id,
                Article.published_at.is_not(None),
                Article.published_at <= moment,
            )
            # NULLS LAST spelled portably: SQLite and PostgreSQL disagree by default.
            .order_by(Article.position.is_(None), Article.position, Article.id)
        )
    )


def series_place(
    session: Session, article: Article, *, now: datetime | None = None
) -> SeriesPlace | None:
    """The article's index, total and neighbours among the published articles of its series.

    None when the article belongs to no series or is not itself published by `now`.
    """
    moment = now or utcnow()
    if article.series_id is None or not is_published(article, moment):
        return None
    series = session.get(Series, article.series_id)
    if series is None:
        return None
    ordered = published_in_order(session, series.id, now=moment)
    ids = [each.id for each in ordered]
    if article.id not in ids:
        return None
    at = ids.index(article.id)
    return SeriesPlace(
        series_slug=series.slug,
        series_title=series.title,
        index=at + 1,
        total=len(ordered),
        previous=ordered[at - 1] if at > 0 else None,
        next=ordered[at + 1] if at + 1 < len(ordered) else None,
    )

"""Articles as emails and pages show them: plain data with their place in a series."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from newsletter.content.models import Article
from newsletter.content.series import series_place
from newsletter.rendering.model import ArticleView, Link


def human_date(moment: datetime | None) -> str:
    """ "7 September 2026" ("" for no date)."""
    return f"{moment.day} {moment:%B %Y}" if moment else ""


def article_url(article: Article, base_url: str) -> str:
    """The article's own page: its canonical URL, else ours."""
    return article.url or f"{base_url}/articles/{article.slug}"


def article_view(session: Session, article: Article, base_url: str) -> ArticleView:
    """Plain data for templates, with the article's place in its series."""
    place = series_place(session, article)

    def link(other: Article | None) -> Link | None:
        return Link(other.title, article_url(other, base_url)) if other else None

    return ArticleView(
        title=article.title,
        url=article_url(article, base_url),
        summary=article.summary,
        body_html=article.body_html,
        author=article.author,
        image=article.image,
        image_alt=article.image_alt,
        published=human_date(article.published_at),
        tags=tuple(article.tags or ()),
        series_title=place.series_title if place else "",
        part=place.index if place else 0,
        parts=place.total if place else 0,
        previous=link(place.previous) if place else None,
        next=link(place.next) if place else None,
    )

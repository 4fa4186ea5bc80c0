"""Articles and the series they belong to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.db import Base, JsonType, UtcDateTime, utcnow


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    articles: Mapped[list[Article]] = relationship(back_populates="series")


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    summary: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(300), default="")
    url: Mapped[str] = mapped_column(String(2000), default="")
    image: Mapped[str] = mapped_column(String(2000), default="")
    image_alt: Mapped[str] = mapped_column(String(1000), default="")
    # None means a draft: never sent, never shown as previous/next.
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id", ondelete="SET NULL"))
    position: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(2000), default="")
    # A feed entry's id (RSS guid / Atom id): re-importing a feed updates, never duplicates.
    guid: Mapped[str | None] = mapped_column(String(2000), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    series: Mapped[Series | None] = relationship(back_populates="articles")


class Feed(Base):
    """An RSS or Atom feed polled for new articles (RSS-to-email)."""

    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id", ondelete="SET NULL"))
    every_seconds: Mapped[int] = mapped_column(Integer, default=3600)
    next_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    last_polled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    etag: Mapped[str] = mapped_column(String(500), default="")
    modified: Mapped[str] = mapped_column(String(200), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    series: Mapped[Series | None] = relationship()

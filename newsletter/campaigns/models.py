"""Templates and campaigns: what is sent, to whom, when (each occurrence is a Run)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Enum,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from newsletter.audience.models import MailingList, TrackingMode
from newsletter.db import Base, JsonType, UtcDateTime, utcnow
from newsletter.runs.models import Run


class CampaignStatus(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    running = "running"
    paused = "paused"
    finished = "finished"
    cancelled = "cancelled"


class ContentKind(enum.StrEnum):
    articles = "articles"  # chosen by hand, by slug
    latest = "latest"  # the N most recently published
    series = "series"  # every published article of a series, in order
    since_last = "since_last"  # published since the previous run (recurring digests)
    tag = "tag"  # the N most recent articles with a tag


campaign_lists = Table(
    "campaign_lists",
    Base.metadata,
    Column("campaign_id", ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("list_id", ForeignKey("mailing_lists.id", ondelete="CASCADE"), primary_key=True),
)


class Template(Base):
    """A staff-authored template (Jinja2 source for subject, HTML and text)."""

    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class TemplateVersion(Base):
    """Every saved version of a stored template, kept for its history (diff, restore)."""

    __tablename__ = "template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")
    saved_by: Mapped[str] = mapped_column(String(400), default="")
    saved_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str] = mapped_column(String(998))
    preheader: Mapped[str] = mapped_column(String(500), default="")
    template: Mapped[str] = mapped_column(String(200), default="digest")
    content_kind: Mapped[ContentKind] = mapped_column(
        Enum(ContentKind, native_enum=False, length=20)
    )
    # articles: {"slugs": [...]}, latest: {"count": N}, series: {"series": SLUG}
    content_args: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[CampaignStatus] = mapped_column(
        Enum(CampaignStatus, native_enum=False, length=20), default=CampaignStatus.draft, index=True
    )
    send_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Recurring: a cron expression read in `timezone`; each occurrence is one run.
    cron: Mapped[str | None] = mapped_column(String(100))
    skip_if_empty: Mapped[bool] = mapped_column(Boolean, default=False)
    # Deliver at the occurrence's wall-clock time in each subscriber's own time zone.
    local_time: Mapped[bool] = mapped_column(Boolean, default=False)
    # Opens and clicks: None follows each list's setting; a mode here can only make a
    # list's mode more private (tracking/policy.py). track_opens None: the lists'.
    tracking: Mapped[TrackingMode | None] = mapped_column(
        Enum(TrackingMode, native_enum=False, length=20)
    )
    track_opens: Mapped[bool | None] = mapped_column(Boolean)
    # Only the lists' members matching this segment (frozen at fan-out); None: all.
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    lists: Mapped[list[MailingList]] = relationship(secondary=campaign_lists)
    runs: Mapped[list[Run]] = relationship(order_by=Run.id, viewonly=True)

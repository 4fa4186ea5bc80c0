"""What the bounce webhooks remember between requests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from newsletter.db import Base, UtcDateTime, utcnow


class WebhookSignature(Base):
    """A provider signature token already accepted, with a digest of the data it came
    with: the same token with other data is a forgery (see bounces/replay.py). Kept
    only as long as the provider's freshness window, then pruned."""

    __tablename__ = "webhook_signatures"
    __table_args__ = (UniqueConstraint("provider", "token"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    token: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the signed event data
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)

"""Raw events are deleted after NEWSLETTER_TRACKING_RETENTION_DAYS; the rollups and the
per-message firsts that reports count stay."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsletter.db import utcnow
from newsletter.tracking.models import TrackingEvent

BATCH = 5000


def prune_events(session: Session, retention_days: int, now: datetime | None = None) -> int:
    """Delete events older than the retention, in batches (each committed); how many."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    total = 0
    while True:
        ids = list(
            session.scalars(
                select(TrackingEvent.id).where(TrackingEvent.occurred_at < cutoff).limit(BATCH)
            )
        )
        if not ids:
            return total
        session.execute(
            delete(TrackingEvent)
            .where(TrackingEvent.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        total += len(ids)

"""Every upcoming send in a window: campaign occurrences and sequence steps per day."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.recurrence import occurrences
from newsletter.sequences.models import Enrollment, EnrollmentStatus, Sequence, SequenceStatus

MAX_OCCURRENCES = 500  # per recurring campaign; a minutely cron over weeks is not a plan


@dataclass(frozen=True)
class UpcomingSend:
    when: str  # ISO time (UTC) for a campaign; a date for sequence steps
    kind: str  # "campaign" or "sequence"
    id: int
    name: str
    count: int = 1  # sequence steps due that day

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def upcoming(session: Session, now: datetime, days: int) -> list[UpcomingSend]:
    until = now + timedelta(days=days)
    items: list[tuple[datetime, UpcomingSend]] = []
    campaigns = session.scalars(
        select(Campaign).where(Campaign.status == CampaignStatus.scheduled)
    ).all()
    for campaign in campaigns:
        if campaign.cron:
            start = max(now, campaign.send_at or now)
            for n, instant in enumerate(occurrences(campaign.cron, campaign.timezone, start)):
                if instant > until or n >= MAX_OCCURRENCES:
                    break
                items.append(
                    (
                        instant,
                        UpcomingSend(instant.isoformat(), "campaign", campaign.id, campaign.name),
                    )
                )
        elif campaign.send_at and campaign.send_at <= until:
            at = campaign.send_at
            items.append((at, UpcomingSend(at.isoformat(), "campaign", campaign.id, campaign.name)))
    rows = session.execute(
        select(Sequence, Enrollment.next_due_at)
        .join(Enrollment, Enrollment.sequence_id == Sequence.id)
        .where(
            Sequence.status == SequenceStatus.active,
            Enrollment.status == EnrollmentStatus.active,
            Enrollment.next_due_at <= until,
        )
    ).all()
    per_day: Counter[tuple[int, str]] = Counter()
    names: dict[int, str] = {}
    for sequence, due in rows:
        day = max(due or now, now).date().isoformat()
        per_day[(sequence.id, day)] += 1
        names[sequence.id] = f"{sequence.series.title} → {sequence.mailing_list.name}"
    for (sequence_id, day), count in per_day.items():
        moment = datetime.fromisoformat(day).replace(tzinfo=now.tzinfo)
        items.append(
            (moment, UpcomingSend(day, "sequence", sequence_id, names[sequence_id], count))
        )
    return [item for _, item in sorted(items, key=lambda pair: (pair[0], pair[1].kind))]

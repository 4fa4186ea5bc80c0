"""The send calendar: what goes out (and went out) on each day of a range.

Unlike Ghost's calendar (which cannot tell planned from scheduled) and Mautic's
(removed), every entry says what it is: a scheduled send, a planned draft (a draft
with a date, which nothing will send until someone schedules it), a run that
happened, every occurrence of a recurring campaign expanded from its cron in its
own zone (an occurrence whose UTC offset differs from the one before is marked: the
clocks changed), a local-time send as a band across the 26 hours it takes, the drip
steps due each day, and articles due to be published. Days are UTC days.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.content.models import Article
from newsletter.recurrence import earliest_local, latest_local, local_occurrences, zone
from newsletter.runs.models import Run
from newsletter.sequences.models import Enrollment, EnrollmentStatus, Sequence, SequenceStatus

MAX_OCCURRENCES = 400  # per recurring campaign and range: a minutely cron is not a plan


@dataclass(frozen=True)
class Entry:
    day: date
    at: datetime | None  # UTC; None for a whole-day entry (drip volume)
    kind: str  # campaign, run, sequence, article
    state: str  # scheduled, planned, recurring, local, sent, <run status>, due, publish
    title: str
    campaign_id: int | None = None
    count: int = 0  # drip steps due
    local: str = ""  # the wall-clock time in the campaign's zone, e.g. "09:00 Europe/Berlin"
    clock_change: str = ""  # e.g. "UTC+01:00 → UTC+02:00"
    band_until: datetime | None = None  # local-time sends: when the last zone gets it
    band_from: datetime | None = None  # and when the first zone does
    until: datetime | None = None  # several occurrences folded into one entry: the last

    @property
    def planned(self) -> bool:
        return self.state == "planned"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _offset_text(moment: datetime, tz: str) -> str:
    offset = moment.astimezone(zone(tz)).utcoffset() or timedelta(0)
    sign = "+" if offset >= timedelta(0) else "-"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _band(at: datetime, tz: str) -> tuple[datetime, datetime]:
    """A local-time send: from the first zone on Earth reaching its wall-clock time to
    the last (26 hours)."""
    return earliest_local(at, tz), latest_local(at, tz)


def _recurring(campaign: Campaign, start: datetime, end: datetime) -> list[Entry]:
    assert campaign.cron is not None
    after = max(start, campaign.send_at or start) - timedelta(seconds=1)
    entries: list[Entry] = []
    previous_offset = _offset_text(after, campaign.timezone)
    for n, occurrence in enumerate(local_occurrences(campaign.cron, campaign.timezone, after)):
        if occurrence.at >= end or n >= MAX_OCCURRENCES:
            break
        offset = _offset_text(occurrence.at, campaign.timezone)
        change = f"{previous_offset} → {offset}" if offset != previous_offset else ""
        if occurrence.moved:
            change = (change + "; " if change else "") + "moved out of the spring gap"
        previous_offset = offset
        band = _band(occurrence.at, campaign.timezone) if campaign.local_time else (None, None)
        entries.append(
            Entry(
                day=(band[0] or occurrence.at).date(),
                at=band[0] or occurrence.at,
                kind="campaign",
                state="local" if campaign.local_time else "recurring",
                title=campaign.name,
                campaign_id=campaign.id,
                local=f"{occurrence.wall:%H:%M} {campaign.timezone}",
                clock_change=change,
                band_from=band[0],
                band_until=band[1],
            )
        )
    return entries


def _one_off(campaign: Campaign, start: datetime, end: datetime) -> list[Entry]:
    at = campaign.send_at
    if at is None:
        return []
    planned = campaign.status is CampaignStatus.draft
    if campaign.local_time and not planned:
        # The wall-clock time of send_at in the campaign's zone, reached zone by zone.
        first, last = _band(at, campaign.timezone)
        if not (first < end and last >= start):
            return []
        local = at.astimezone(zone(campaign.timezone))
        return [
            Entry(
                day=max(first, start).date(),
                at=first,
                kind="campaign",
                state="local",
                title=campaign.name,
                campaign_id=campaign.id,
                local=f"{local:%H:%M} in each reader's zone",
                band_from=first,
                band_until=last,
            )
        ]
    if not start <= at < end:
        return []
    local = at.astimezone(zone(campaign.timezone))
    return [
        Entry(
            day=at.date(),
            at=at,
            kind="campaign",
            state="planned" if planned else "scheduled",
            title=campaign.name,
            campaign_id=campaign.id,
            local=f"{local:%H:%M} {campaign.timezone}" if campaign.timezone != "UTC" else "",
        )
    ]


FOLD_ABOVE = 3  # occurrences of one campaign a day beyond which they show as one entry


def _fold(entries: list[Entry]) -> list[Entry]:
    """An hourly cron is 24 entries a day: a campaign with more than FOLD_ABOVE
    occurrences on one day shows as one entry with their count, first and last time
    (and the first clock change among them)."""
    by_day: dict[tuple[int | None, date], list[Entry]] = {}
    for entry in entries:
        by_day.setdefault((entry.campaign_id, entry.day), []).append(entry)
    folded = []
    for group in by_day.values():
        if len(group) <= FOLD_ABOVE:
            folded.extend(group)
            continue
        first = group[0]
        change = next((e.clock_change for e in group if e.clock_change), "")
        folded.append(replace(first, count=len(group), until=group[-1].at, clock_change=change))
    return folded


def calendar(session: Session, first: date, last: date) -> list[Entry]:
    """Every entry from `first` to `last` (inclusive), by time."""
    start, end = _day_start(first), _day_start(last + timedelta(days=1))
    entries: list[Entry] = []
    live = (CampaignStatus.scheduled, CampaignStatus.running, CampaignStatus.paused)
    for campaign in session.scalars(
        select(Campaign).where(Campaign.status.in_((*live, CampaignStatus.draft)))
    ):
        if campaign.cron and campaign.status in live:
            entries.extend(_fold(_recurring(campaign, start, end)))
        elif campaign.status in (CampaignStatus.scheduled, CampaignStatus.draft):
            # Running and paused one-off campaigns show as their run.
            entries.extend(_one_off(campaign, start, end))
    runs = session.execute(
        select(Run, Campaign.name)
        .join(Campaign, Campaign.id == Run.campaign_id)
        .where(Run.occurrence_at >= start, Run.occurrence_at < end)
    ).all()
    for run, name in runs:
        entries.append(
            Entry(
                day=run.occurrence_at.date(),
                at=run.occurrence_at,
                kind="run",
                state=run.status.value,
                title=name,
                campaign_id=run.campaign_id,
            )
        )
    entries.extend(_drip_volume(session, start, end))
    for article in session.scalars(
        select(Article).where(Article.published_at >= start, Article.published_at < end)
    ):
        assert article.published_at is not None
        entries.append(
            Entry(
                day=article.published_at.date(),
                at=article.published_at,
                kind="article",
                state="publish",
                title=article.title,
            )
        )
    return sorted(entries, key=lambda e: (e.day, e.at or _day_start(e.day), e.kind))


def _drip_volume(session: Session, start: datetime, end: datetime) -> list[Entry]:
    """Drip steps due per day and sequence (each reader's next step: later steps
    depend on when that one goes)."""
    rows = session.execute(
        select(Sequence, Enrollment.next_due_at)
        .join(Enrollment, Enrollment.sequence_id == Sequence.id)
        .where(
            Sequence.status == SequenceStatus.active,
            Enrollment.status == EnrollmentStatus.active,
            Enrollment.next_due_at >= start,
            Enrollment.next_due_at < end,
        )
    ).all()
    per_day: Counter[tuple[int, date]] = Counter()
    names: dict[int, str] = {}
    for sequence, due in rows:
        assert due is not None  # filtered above
        per_day[(sequence.id, due.date())] += 1
        names[sequence.id] = f"{sequence.series.title} → {sequence.mailing_list.name}"
    return [
        Entry(day=day, at=None, kind="sequence", state="due", title=names[sid], count=count)
        for (sid, day), count in per_day.items()
    ]

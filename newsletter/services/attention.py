"""What needs a person's attention now: the console's home page (and any face that
wants the same answer).

Running sends with their rate and ETA, runs that stalled, failed and deferred
deliveries, spikes of bounces and complaints, imports that rejected rows, and the
next days of sends. Every number comes from the database, so it is the same
whichever process asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.audience.models import BounceEvent, ImportJob
from newsletter.campaigns.models import Campaign
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
from newsletter.runs.progress import RunProgress, active_runs, run_progress
from newsletter.sequences.models import Sequence
from newsletter.services.upcoming import UpcomingSend, upcoming

DAY = timedelta(days=1)
# A day counts as a spike when it has more than this many events and more than
# SPIKE_FACTOR times the average day of the week before.
BOUNCE_FLOOR = 10
COMPLAINT_FLOOR = 1
SPIKE_FACTOR = 3.0


@dataclass(frozen=True)
class Spike:
    """Events of one kind in the last 24 hours against the daily average before."""

    kind: str
    last_day: int
    daily_average: float
    floor: int

    @property
    def spiking(self) -> bool:
        return self.last_day > self.floor and self.last_day > SPIKE_FACTOR * self.daily_average


@dataclass(frozen=True)
class ImportWithErrors:
    job: int
    list_slug: str
    filename: str
    rejected: int
    at: datetime


@dataclass
class Attention:
    running: list[RunProgress] = field(default_factory=list)
    stalled: list[RunProgress] = field(default_factory=list)
    failed_last_day: int = 0
    deferred: int = 0
    bounces: Spike = field(default_factory=lambda: Spike("bounces", 0, 0.0, BOUNCE_FLOOR))
    complaints: Spike = field(default_factory=lambda: Spike("complaints", 0, 0.0, 1))
    imports: list[ImportWithErrors] = field(default_factory=list)
    upcoming: list[UpcomingSend] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        """Nothing that needs a person."""
        return not (
            self.stalled
            or self.failed_last_day
            or self.bounces.spiking
            or self.complaints.spiking
            or self.imports
        )


def run_name(session: Session, run: Run) -> str:
    """What a run is, for people: its campaign's name, or the drip's series → list."""
    if run.campaign_id is not None:
        return session.get_one(Campaign, run.campaign_id).name
    sequence = session.get_one(Sequence, run.sequence_id)
    return f"{sequence.series.title} → {sequence.mailing_list.name}"


def _spike(session: Session, kinds: tuple[str, ...], name: str, floor: int, now: datetime) -> Spike:
    def count(start: datetime, end: datetime) -> int:
        return (
            session.scalar(
                select(func.count(BounceEvent.id)).where(
                    BounceEvent.kind.in_(kinds),
                    BounceEvent.received_at >= start,
                    BounceEvent.received_at < end,
                )
            )
            or 0
        )

    last_day = count(now - DAY, now + timedelta(seconds=1))
    week_before = count(now - 8 * DAY, now - DAY)
    return Spike(name, last_day, week_before / 7, floor)


def needs_attention(session: Session, now: datetime, stall: timedelta, days: int = 7) -> Attention:
    """Everything the home page shows, as of `now`; `stall` is how long a sending run
    may go without progress (NEWSLETTER_STALL_SECONDS)."""
    found = Attention()
    for run in active_runs(session):
        progress = run_progress(session, run, run_name(session, run))
        found.running.append(progress)
        quiet_since = run.last_progress_at or run.started_at or run.created_at
        if run.status in (RunStatus.preparing, RunStatus.sending) and quiet_since < now - stall:
            found.stalled.append(progress)
    found.failed_last_day = (
        session.scalar(
            select(func.count(Delivery.id)).where(
                Delivery.status == DeliveryStatus.failed, Delivery.updated_at >= now - DAY
            )
        )
        or 0
    )
    found.deferred = (
        session.scalar(
            select(func.count(Delivery.id)).where(Delivery.status == DeliveryStatus.deferred)
        )
        or 0
    )
    found.bounces = _spike(session, ("hard", "soft"), "bounces", BOUNCE_FLOOR, now)
    found.complaints = _spike(session, ("complaint",), "complaints", COMPLAINT_FLOOR, now)
    jobs = session.scalars(
        select(ImportJob)
        .where(ImportJob.created_at >= now - days * DAY)
        .order_by(ImportJob.id.desc())
        .limit(50)
    )
    found.imports = [
        ImportWithErrors(j.id, j.mailing_list.slug, j.filename, len(j.problems), j.created_at)
        for j in jobs
        if j.problems and not j.dry_run
    ]
    found.upcoming = fold_by_day(upcoming(session, now, days))
    return found


def fold_by_day(items: list[UpcomingSend]) -> list[UpcomingSend]:
    """One line per campaign and day: an hourly campaign is one line with its count,
    not 24 (its first time that day stands for them)."""
    seen: dict[tuple[str, int, str], int] = {}
    folded: list[UpcomingSend] = []
    for item in items:
        if item.kind != "campaign":
            folded.append(item)
            continue
        key = (item.kind, item.id, item.when[:10])
        if key in seen:
            at = seen[key]
            folded[at] = replace(folded[at], count=folded[at].count + 1)
            continue
        seen[key] = len(folded)
        folded.append(item)
    return folded

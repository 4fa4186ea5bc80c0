"""A campaign's runs: claimed when an occurrence is due, prepared, finished.

Each occurrence of a campaign is one Run (see runs/): one-off campaigns have one,
recurring ones one per cron occurrence. The run's status changes in runs.lifecycle;
this module adds what a campaign decides: which occurrence is due, what the email
holds, who receives it and when, and the campaign's own status.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter.campaigns.content import NothingToSend, freeze_campaign_run, get_campaign
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.errors import NewsletterError
from newsletter.recurrence import (
    LOCAL_TIME_LEAD,
    at_wall_clock,
    earliest_local,
    fold_missed,
    latest_due,
    occurrences,
    wall_clock,
)
from newsletter.runs import lifecycle
from newsletter.runs.fanout import DeliverAt, fan_out
from newsletter.runs.ledger import Chunk, SegmentCompilerMissing, SegmentFilter
from newsletter.runs.models import Run


def claim_due_campaigns(
    session: Session, now: datetime, catch_up: timedelta = timedelta(hours=6)
) -> list[int]:
    """Start a run for each campaign occurrence that is due; returns the new run ids.

    One-off campaigns: the conditional update is the claim; of two schedulers ticking
    at once only one sees its UPDATE change the row (PostgreSQL re-checks the WHERE
    after the other commits). Recurring campaigns: the run is unique per campaign and
    occurrence, so the insert is the claim. Missed occurrences (scheduler down) fold
    into the latest one, which is sent once, or skipped when older than `catch_up`.
    """
    due = session.execute(
        select(
            Campaign.id, Campaign.cron, Campaign.local_time, Campaign.send_at, Campaign.timezone
        ).where(
            Campaign.status == CampaignStatus.scheduled,
            or_(
                Campaign.send_at <= now,
                # Local-time sends start when the first time zone reaches them.
                and_(Campaign.local_time, Campaign.send_at <= now + LOCAL_TIME_LEAD),
            ),
        )
    ).all()
    run_ids = []
    for campaign_id, cron, local_time, send_at, tz in due:
        if cron:
            run_id = _claim_recurring(session, campaign_id, now, catch_up)
        elif local_time and send_at is not None and earliest_local(send_at, tz) > now:
            continue
        else:
            run_id = _claim_one_off(session, campaign_id, now)
        if run_id is not None:
            run_ids.append(run_id)
    return run_ids


def _claim_one_off(session: Session, campaign_id: int, now: datetime) -> int | None:
    claimed = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.scheduled)
        .values(status=CampaignStatus.running, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    send_at = session.scalar(select(Campaign.send_at).where(Campaign.id == campaign_id))
    assert send_at is not None
    return lifecycle.open_campaign_run(session, campaign_id, send_at, now)


def _claim_recurring(
    session: Session, campaign_id: int, now: datetime, catch_up: timedelta
) -> int | None:
    campaign = session.get_one(Campaign, campaign_id)
    assert campaign.cron and campaign.send_at
    last = session.scalar(select(func.max(Run.occurrence_at)).where(Run.campaign_id == campaign_id))
    # Occurrences at or after the start time, after the last run, not older than catch_up.
    after = max(last or (campaign.send_at - timedelta(microseconds=1)), now - catch_up)
    if campaign.local_time:
        occurrence = _local_time_due(campaign.cron, campaign.timezone, after, now)
    else:
        occurrence = latest_due(campaign.cron, campaign.timezone, after, now)
    if occurrence is None:
        return None
    return lifecycle.open_campaign_run(session, campaign_id, occurrence, now)


def _local_time_due(cron: str, tz: str, after: datetime, now: datetime) -> datetime | None:
    """The occurrence whose wall-clock time some time zone has already reached, folding
    missed ones as `latest_due` does."""
    due = []
    for instant in occurrences(cron, tz, after):
        if earliest_local(instant, tz) > now:
            break
        due.append(instant)
    return fold_missed(due)


def local_time_schedule(campaign: Campaign, run: Run) -> DeliverAt:
    """For each audience row, the run's wall-clock time in the subscriber's own zone
    (else their list's, else the campaign's)."""
    wall = wall_clock(run.occurrence_at, campaign.timezone)
    list_zones = {ml.id: ml.timezone for ml in campaign.lists}

    def deliver_at(row: Any) -> datetime:
        return at_wall_clock(wall, row.timezone or list_zones.get(row.list_id), campaign.timezone)

    return deliver_at


def prepare_campaign_run(
    sessions: sessionmaker[Session],
    run_id: int,
    settings: Settings,
    enqueue: Callable[[Chunk], None],
    segment_filter: SegmentFilter | None = None,
) -> int:
    """Freeze the run's email, write its ledger and enqueue its chunks; returns the
    number of recipients (0 for a run that was skipped or is gone). A campaign with
    a segment needs `segment_filter`.

    An empty digest that skips empty runs is skipped; one that cannot be rendered
    fails (and is raised), and its one-off campaign goes back to draft."""
    with sessions() as session:
        run = session.get(Run, run_id)
        if run is None:
            return 0
        try:
            freeze_campaign_run(session, run, settings)
        except NothingToSend as exc:
            session.rollback()
            lifecycle.skip(session, run_id, str(exc))
            session.commit()
            return 0
        except NewsletterError as exc:
            session.rollback()
            fail_campaign_run(session, run_id, str(exc))
            session.commit()
            raise
        session.commit()
    return fan_out_campaign_run(sessions, run_id, settings.chunk_size, enqueue, segment_filter)


def fan_out_campaign_run(
    sessions: sessionmaker[Session],
    run_id: int,
    chunk_size: int,
    enqueue: Callable[[Chunk], None],
    segment_filter: SegmentFilter | None = None,
) -> int:
    """Write the run's ledger for the campaign's lists (each reader due at their own
    local time for a local-time campaign; only those matching its segment, as the
    segment reads now) and enqueue its chunks; see runs.fanout."""
    with sessions() as session:
        run = session.get_one(Run, run_id)
        assert run.campaign_id is not None
        campaign = get_campaign(session, run.campaign_id)
        list_ids = [ml.id for ml in campaign.lists]
        deliver_at = local_time_schedule(campaign, run) if campaign.local_time else None
        where = None
        if campaign.segment_id is not None:
            if segment_filter is None:
                raise SegmentCompilerMissing(
                    f"campaign {campaign.id} has a segment but no segment compiler was given"
                )
            # Compiled once: relative times ("clicked in the last 30 days") are read
            # now, so every page of the run sees the same audience.
            where = segment_filter(session, campaign.segment_id)
    return fan_out(sessions, run_id, list_ids, chunk_size, enqueue, deliver_at, where)


def fail_campaign_run(session: Session, run_id: int, error: str) -> None:
    """A run that cannot be prepared: record why. A one-off campaign goes back to
    draft so staff can fix it and schedule it again; a recurring one keeps its
    schedule (the next occurrence may well work)."""
    run = lifecycle.fail(session, run_id, error)
    if run.campaign_id is None:
        return
    campaign = session.get_one(Campaign, run.campaign_id)
    if not campaign.cron:
        campaign.status = CampaignStatus.draft
        session.flush()


def finish_run(session: Session, run_id: int) -> bool:
    """Finish a sending run once nothing is left to send (campaign run or drip step)
    and, for a one-off campaign, the campaign with it; True if this call finished it."""
    if not lifecycle.finish_if_done(session, run_id):
        return False
    campaign_id = session.scalar(select(Run.campaign_id).where(Run.id == run_id))
    if campaign_id is not None:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.running)
            .values(status=CampaignStatus.finished, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return True

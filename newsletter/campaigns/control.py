"""Pausing, resuming and cancelling a campaign while it sends.

Workers look at their run's status about once a second: a pause hands their
unsent rows back (pending), a cancel marks them cancelled. Resuming marks the run as
stalled so the next scheduler tick rebuilds its queue from the ledger, which works
whichever broker is configured and whichever process runs the command.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign, CampaignStatus, Run, RunStatus
from newsletter.campaigns.service import get_campaign
from newsletter.db import utcnow
from newsletter.delivery.models import Delivery, DeliveryStatus
from newsletter.errors import InvalidInputError

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def _runs(session: Session, campaign: Campaign, *statuses: RunStatus) -> list[Run]:
    return [run for run in campaign.runs if run.status in statuses]


def pause_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.running, CampaignStatus.scheduled):
        raise InvalidInputError(f"campaign {campaign_id} is {campaign.status.value}; cannot pause")
    campaign.status = CampaignStatus.paused
    for run in _runs(session, campaign, RunStatus.sending, RunStatus.preparing):
        run.status = RunStatus.paused
    session.flush()
    return campaign


def resume_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, campaign_id)
    if campaign.status is not CampaignStatus.paused:
        raise InvalidInputError(f"campaign {campaign_id} is {campaign.status.value}, not paused")
    paused_runs = _runs(session, campaign, RunStatus.paused)
    if paused_runs:
        campaign.status = CampaignStatus.running
    else:  # paused before its first run started
        campaign.status = CampaignStatus.scheduled
    for run in paused_runs:
        run.status = RunStatus.sending if run.snapshot is not None else RunStatus.preparing
        run.last_progress_at = LONG_AGO  # the next tick re-enqueues what is left
    session.flush()
    return campaign


def cancel_campaign(session: Session, campaign_id: int) -> Campaign:
    """Stop for good: nothing more is sent; what was sent stays recorded."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status in (CampaignStatus.finished, CampaignStatus.cancelled):
        raise InvalidInputError(f"campaign {campaign_id} is already {campaign.status.value}")
    campaign.status = CampaignStatus.cancelled
    now = utcnow()
    for run in _runs(session, campaign, RunStatus.sending, RunStatus.preparing, RunStatus.paused):
        run.status = RunStatus.cancelled
        run.finished_at = now
        session.execute(
            update(Delivery)
            .where(
                Delivery.run_id == run.id,
                Delivery.status.in_((DeliveryStatus.pending, DeliveryStatus.deferred)),
            )
            .values(status=DeliveryStatus.cancelled, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return campaign

"""Pausing, resuming and cancelling a campaign while it sends.

Workers look at their run's status about once a second: a pause hands their
unsent rows back (pending), a cancel marks them cancelled. Resuming marks the run as
stalled so the next scheduler tick rebuilds its queue from the ledger, which works
whichever broker is configured and whichever process runs the command. The runs'
statuses change in runs.lifecycle; the campaign's here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.campaigns.content import get_campaign
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.errors import InvalidInputError
from newsletter.events.outbox import emit
from newsletter.runs import lifecycle
from newsletter.runs.models import RunStatus

Change = Callable[[Session, int], Campaign]


def pause_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in (CampaignStatus.running, CampaignStatus.scheduled):
        raise InvalidInputError(f"campaign {campaign_id} is {campaign.status.value}; cannot pause")
    before = campaign.status.value
    campaign.status = CampaignStatus.paused
    lifecycle.pause(session, campaign.runs)
    emit(session, "campaign.paused", {"campaign_id": campaign.id, "name": campaign.name})
    _audit(session, "campaign.pause", campaign, before)
    return campaign


def _audit(session: Session, action: str, campaign: Campaign, before: str) -> None:
    audit.record(
        session,
        action,
        f"campaign:{campaign.id}",
        before={"status": before},
        after={"status": campaign.status.value},
    )


def resume_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = get_campaign(session, campaign_id)
    if campaign.status is not CampaignStatus.paused:
        raise InvalidInputError(f"campaign {campaign_id} is {campaign.status.value}, not paused")
    paused_runs = [run for run in campaign.runs if run.status is RunStatus.paused]
    # Paused before its first run started: it is simply scheduled again.
    campaign.status = CampaignStatus.running if paused_runs else CampaignStatus.scheduled
    lifecycle.resume(session, paused_runs)
    _audit(session, "campaign.resume", campaign, CampaignStatus.paused.value)
    return campaign


def cancel_campaign(session: Session, campaign_id: int) -> Campaign:
    """Stop for good: nothing more is sent; what was sent stays recorded."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status in (CampaignStatus.finished, CampaignStatus.cancelled):
        raise InvalidInputError(f"campaign {campaign_id} is already {campaign.status.value}")
    before = campaign.status.value
    campaign.status = CampaignStatus.cancelled
    lifecycle.cancel(session, campaign.runs)
    _audit(session, "campaign.cancel", campaign, before)
    return campaign

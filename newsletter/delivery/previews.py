"""Previews and test sends: the campaign as it would go out now, outside any run."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from newsletter.audience.addresses import normalise_email
from newsletter.campaigns.content import get_campaign
from newsletter.campaigns.content import render_now as render_campaign_now
from newsletter.config import Settings
from newsletter.delivery.content import list_headers
from newsletter.delivery.outgoing import Outgoing
from newsletter.rendering.mime import MessageTemplate, Recipient, new_message_id
from newsletter.rendering.model import Snapshot
from newsletter.rendering.preview import SAMPLE_VALUES, fill_html


def render_now(session: Session, campaign_id: int, settings: Settings) -> Snapshot:
    """The campaign's email as it would go out now (no run, nothing frozen)."""
    return render_campaign_now(session, get_campaign(session, campaign_id), settings)


def preview_html(session: Session, campaign_id: int, settings: Settings) -> str:
    """The inlined HTML with sample recipient values."""
    return fill_html(render_now(session, campaign_id, settings))


def send_test(session: Session, campaign_id: int, to: str, settings: Settings) -> str:
    """Send one copy marked [Test] to `to` through the configured mailer; nothing is
    written to the ledger."""
    address = normalise_email(to)
    campaign = get_campaign(session, campaign_id)
    snapshot = render_now(session, campaign_id, settings)
    snapshot = replace(snapshot, subject=f"[Test] {snapshot.subject}", personal=None)
    template = MessageTemplate(
        snapshot, list_headers(settings, campaign.lists, f"c{campaign.id}", "test")
    )
    values = {
        **SAMPLE_VALUES,
        "email": address,
        "unsubscribe_url": f"{settings.base_url}/unsubscribe/test",
    }
    message_id = new_message_id(settings.sender_domain)
    outgoing = Outgoing.from_settings(settings)
    try:
        result = outgoing.deliver(template, Recipient(address, "", values, message_id))
    finally:
        outgoing.close()
    return result.reply

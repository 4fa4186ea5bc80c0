"""Previews and test sends: the campaign as it would go out now, outside any run."""

from __future__ import annotations

from email.utils import parseaddr

from sqlalchemy.orm import Session

from newsletter.audience.addresses import normalise_email
from newsletter.campaigns.runs import email_content
from newsletter.campaigns.service import get_campaign
from newsletter.campaigns.templates import render_campaign_email
from newsletter.config import Settings
from newsletter.delivery.dkim import signer_from_settings
from newsletter.delivery.mailers import OutgoingMessage, make_mailer
from newsletter.delivery.sending import list_headers
from newsletter.rendering.mime import MessageTemplate, Recipient, new_message_id
from newsletter.rendering.preview import SAMPLE_VALUES, fill_html
from newsletter.rendering.render import Snapshot


def render_now(session: Session, campaign_id: int, settings: Settings) -> Snapshot:
    campaign = get_campaign(session, campaign_id)
    content = email_content(session, campaign, settings, web_url=f"{settings.base_url}/archive")
    return render_campaign_email(session, campaign.template, content)


def preview_html(session: Session, campaign_id: int, settings: Settings) -> str:
    """The inlined HTML with sample recipient values."""
    return fill_html(render_now(session, campaign_id, settings))


def send_test(session: Session, campaign_id: int, to: str, settings: Settings) -> str:
    """Send one copy marked [Test] to `to`; nothing is written to the ledger."""
    address = normalise_email(to)
    campaign = get_campaign(session, campaign_id)
    snapshot = render_now(session, campaign_id, settings)
    snapshot = Snapshot(
        subject=f"[Test] {snapshot.subject}",
        html=snapshot.html,
        text=snapshot.text,
        fallbacks=snapshot.fallbacks,
    )
    template = MessageTemplate(
        snapshot, list_headers(settings, campaign.lists, f"c{campaign.id}", "test")
    )
    message_id = new_message_id(settings.sender_domain)
    values = {
        **SAMPLE_VALUES,
        "email": address,
        "unsubscribe_url": f"{settings.base_url}/unsubscribe/test",
    }
    data = template.build(Recipient(address, "", values, message_id))
    signer = signer_from_settings(settings)
    if signer is not None:
        data = signer.sign(data)
    mailer = make_mailer(settings.mail_target)
    try:
        result = mailer.send(
            OutgoingMessage(parseaddr(settings.from_address)[1], address, data, message_id)
        )
    finally:
        mailer.close()
    return result.reply

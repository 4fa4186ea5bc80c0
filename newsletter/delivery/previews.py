"""Previews and test sends: the campaign as it would go out now, outside any run."""

from __future__ import annotations

import html as html_lib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.audience.addresses import normalise_email
from newsletter.audience.models import Subscriber
from newsletter.campaigns.content import get_campaign
from newsletter.campaigns.content import render_now as render_campaign_now
from newsletter.campaigns.service import update_campaign
from newsletter.config import Settings
from newsletter.delivery.content import list_headers
from newsletter.delivery.outgoing import Outgoing
from newsletter.errors import NotFoundError
from newsletter.rendering.library import TemplateLibrary, template_library
from newsletter.rendering.mime import MessageTemplate, Recipient, new_message_id
from newsletter.rendering.model import PersonalSpec, Snapshot
from newsletter.rendering.personal import render_variant
from newsletter.rendering.preview import SAMPLE_VALUES, fill_html
from newsletter.rendering.readers import reader_context
from newsletter.rendering.slots import ATTRIBUTE_PREFIX, SlotTemplate, slot_values


def render_now(session: Session, campaign_id: int, settings: Settings) -> Snapshot:
    """The campaign's email as it would go out now (no run, nothing frozen)."""
    return render_campaign_now(session, get_campaign(session, campaign_id), settings)


def preview_html(session: Session, campaign_id: int, settings: Settings) -> str:
    """The inlined HTML with sample recipient values."""
    return fill_html(render_now(session, campaign_id, settings))


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str


def preview_for(
    session: Session,
    campaign_id: int,
    settings: Settings,
    subscriber_email: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Preview:
    """The campaign as one subscriber would get it now (sample values without one):
    their variant of a template that reads the reader, their name and attributes in
    the slots. Links to unsubscribe and preferences are placeholders, so following
    one in a preview changes nobody's subscription.

    `changes` are edits of a draft not saved yet (the arguments of
    `update_campaign`, checked as a save checks them): the preview shows the draft as
    it would be, and nothing is written."""
    if not changes:
        return _preview(session, campaign_id, settings, subscriber_email)
    savepoint = session.begin_nested()
    try:
        update_campaign(session, campaign_id, library=settings_library(settings), **dict(changes))
        return _preview(session, campaign_id, settings, subscriber_email)
    finally:
        savepoint.rollback()


def _preview(
    session: Session, campaign_id: int, settings: Settings, subscriber_email: str | None
) -> Preview:
    snapshot = render_now(session, campaign_id, settings)
    values = dict(SAMPLE_VALUES)
    if subscriber_email is not None:
        address = normalise_email(subscriber_email)
        subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
        if subscriber is None:
            raise NotFoundError(f"no subscriber {address}")
        attributes = subscriber.attributes or {}
        if snapshot.personal is not None:
            spec = PersonalSpec.from_json(snapshot.personal)
            reader = reader_context(spec.fields, subscriber.name, subscriber.email, attributes)
            snapshot = render_variant(spec, reader, settings_library(settings))
        values = {**values, "name": subscriber.name, "email": subscriber.email}
        values.update(
            {f"{ATTRIBUTE_PREFIX}{k}": "" if v is None else str(v) for k, v in attributes.items()}
        )
    html = SlotTemplate.compile(snapshot.html, snapshot.marker)
    text = SlotTemplate.compile(snapshot.text, snapshot.marker)
    subject = SlotTemplate.compile(snapshot.subject, snapshot.marker)
    merged = {key: "" for key in (*html.keys, *text.keys, *subject.keys)}
    merged.update(slot_values(snapshot.fallbacks, values))
    return Preview(
        subject=subject.fill(merged),
        html=html.fill({k: html_lib.escape(v) for k, v in merged.items()}),
        text=text.fill(merged),
    )


def settings_library(settings: Settings) -> TemplateLibrary:
    return template_library(settings.templates_dir)


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
    audit.record(session, "campaign.test_send", f"campaign:{campaign_id}", detail={"to": address})
    return result.reply

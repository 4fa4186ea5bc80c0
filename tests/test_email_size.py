"""The sample series' emails stay under Gmail's clipping limit.

Gmail cuts a message off behind "[Message clipped]" when it is larger than about
102 kB, hiding the footer with the unsubscribe link. Both the HTML part (after
quoted-printable decoding) and the whole message as sent must stay below it.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.campaigns.models import Campaign
from newsletter.campaigns.service import ContentSpec, create_campaign
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.db import make_engine, make_sessionmaker
from newsletter.delivery.content import list_headers
from newsletter.delivery.previews import render_now
from newsletter.rendering.mime import MessageTemplate, Recipient
from tests.factories import import_sample, make_list, series_digest, settings_for

GMAIL_CLIP_BYTES = 102_000  # Gmail clips above "102 kB"; stay below the smaller reading
# A long name and tokens as long as real ones, so the estimate is not optimistic.
VALUES = {
    "name": "Maximiliane Zoë Alexandra Papadopoulou-Øvergaard",
    "email": "maximiliane.papadopoulou-overgaard@example.org",
    "unsubscribe_url": "https://news.example.org/unsubscribe/" + "u" * 120,
    "preferences_url": "https://news.example.org/preferences/" + "p" * 120,
}


@pytest.fixture
def sample(sqlite_url: str) -> Iterator[tuple[Session, Settings]]:
    """The sample series imported into a database of its own (size does not depend on
    the database, so SQLite alone)."""
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        make_list(session)
        yield session, settings_for(sqlite_url)
    engine.dispose()


def sent_bytes(session: Session, settings: Settings, campaign: Campaign) -> bytes:
    template = MessageTemplate(
        render_now(session, campaign.id, settings),
        list_headers(settings, campaign.lists, f"c{campaign.id}", "1"),
    )
    recipient = Recipient(VALUES["email"], VALUES["name"], VALUES, "<nl.1.1.x@clinic.example>")
    return template.build(recipient)


def html_part(data: bytes) -> bytes:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert part is not None
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def assert_not_clipped(data: bytes) -> None:
    assert len(html_part(data)) < GMAIL_CLIP_BYTES
    assert len(data) < GMAIL_CLIP_BYTES


def test_the_default_digest_of_the_sample_series_is_not_clipped(
    sample: tuple[Session, Settings],
) -> None:
    session, settings = sample
    campaign = series_digest(session, ["clinic-news"], subject="{{ slot('name') }}, news")

    data = sent_bytes(session, settings, campaign)

    assert_not_clipped(data)


def test_each_sample_article_email_is_not_clipped(sample: tuple[Session, Settings]) -> None:
    session, settings = sample
    slugs = session.scalars(select(Article.slug).order_by(Article.slug)).all()
    assert len(slugs) == 5

    for slug in slugs:
        campaign = create_campaign(
            session,
            name=f"Article {slug}",
            list_slugs=["clinic-news"],
            subject="{{ slot('name') }}, a new article",
            content=ContentSpec(slugs=(slug,)),
            template="article",
        )

        assert_not_clipped(sent_bytes(session, settings, campaign))

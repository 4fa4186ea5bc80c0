"""Test data built through the same domain functions staff use."""

from __future__ import annotations

import time
from pathlib import Path

import pyotp
from sqlalchemy.orm import Session

from newsletter.audience.addresses import normalise_email
from newsletter.audience.lists import create_list
from newsletter.audience.models import (
    ArchiveVisibility,
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from newsletter.campaigns.models import Campaign
from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import ContentSpec, create_campaign, schedule_campaign
from newsletter.config import Settings, load_settings
from newsletter.content.importer import import_articles
from newsletter.db import make_sessionmaker, utcnow
from newsletter.runs.ledger import Chunk

SAMPLE_ARTICLES = Path(__file__).resolve().parent.parent / "newsletter" / "sample" / "articles"
SERIES = "understanding-treatment"
BASE_URL = "https://news.example.org"
POSTAL_ADDRESS = "12 River Road, Springfield, IL 62701, USA"


def settings_for(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "base_url": BASE_URL,
        "secret_key": "test-secret-of-at-least-32-bytes-long",
        "from_address": "Riverside Clinic <news@clinic.example>",
        "mail_url": "outbox:/nonexistent-outbox-set-mail_url",
        "postal_address": POSTAL_ADDRESS,
    }
    values.update(overrides)
    return load_settings(**values)


def import_sample(session: Session) -> None:
    report = import_articles(session, [SAMPLE_ARTICLES])
    assert not report.problems, report.problems
    session.flush()


def make_list(
    session: Session,
    slug: str = "clinic-news",
    name: str = "Clinic news",
    archive: ArchiveVisibility = ArchiveVisibility.public,
    postal_address: str = POSTAL_ADDRESS,
) -> MailingList:
    """A double opt-in list with a public archive and a postal address of its own (so
    its campaigns can be scheduled without settings)."""
    mailing_list = create_list(
        session,
        slug,
        name,
        opt_in=OptIn.double,
        archive=archive,
        postal_address=postal_address,
        public=True,
    )
    session.flush()
    return mailing_list


def add_member(
    session: Session,
    mailing_list: MailingList,
    email: str,
    name: str = "",
    status: SubscriptionStatus = SubscriptionStatus.confirmed,
    **attributes: str,
) -> Subscriber:
    email = normalise_email(email)  # as every domain function stores it
    subscriber = session.query(Subscriber).filter_by(email=email).one_or_none()
    if subscriber is None:
        subscriber = Subscriber(email=email, name=name, attributes=attributes)
        session.add(subscriber)
        session.flush()
    session.add(
        Subscription(
            subscriber_id=subscriber.id,
            list_id=mailing_list.id,
            status=status,
            confirmed_at=utcnow() if status is SubscriptionStatus.confirmed else None,
        )
    )
    session.flush()
    return subscriber


def series_digest(session: Session, list_slugs: list[str], subject: str = "News") -> Campaign:
    return create_campaign(
        session,
        name="Series digest",
        list_slugs=list_slugs,
        subject=subject,
        content=ContentSpec(series=SERIES),
    )


def start_run(
    session: Session, campaign: Campaign, chunk_size: int = 10_000
) -> tuple[int, list[Chunk]]:
    """Schedule the campaign for now, claim its run and write its ledger, as the
    scheduler and `prepare_run` would; returns the run id and its chunks."""
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    chunks: list[Chunk] = []
    fan_out_campaign_run(make_sessionmaker(session.get_bind()), run_id, chunk_size, chunks.append)  # type: ignore[arg-type]
    return run_id, chunks


def wrong_totp_code(secret: str) -> str:
    """Six digits that are none of the codes the secret accepts now (the current one,
    the one before and the one after)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    accepted = {totp.at(now + step * totp.interval) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in accepted)

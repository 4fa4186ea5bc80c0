"""Test data built through the same domain functions staff use, and readers' opens and
clicks recorded by the function the public tracking routes call."""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path

import pyotp
from sqlalchemy import select
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
    TrackingMode,
)
from newsletter.campaigns.models import Campaign
from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import ContentSpec, create_campaign, schedule_campaign
from newsletter.config import Settings, load_settings
from newsletter.content.importer import import_articles
from newsletter.content.models import Article
from newsletter.db import make_sessionmaker, utcnow
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.runs.ledger import Chunk
from newsletter.runs.models import Delivery, Run, RunStatus
from newsletter.sequences.service import create_sequence
from newsletter.tracking.events import HitRequest, TrackingConfig, record_hit
from newsletter.tracking.models import EventKind
from newsletter.tracking.tokens import TrackingSigner

SAMPLE_ARTICLES = Path(__file__).resolve().parent.parent / "newsletter" / "sample" / "articles"
SERIES = "understanding-treatment"
BASE_URL = "https://news.example.org"
POSTAL_ADDRESS = "12 River Road, Springfield, IL 62701, USA"
# Who follows a tracked link or loads the pixel: a person's browser, a mail scanner.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
SCANNER = "Barracuda Sentinel (EE)"
# The tokens of an email's tracked links and of its pixel.
TRACKED = re.compile(r'href="[^"]*/t/c/([^"]+)"')
PIXEL = re.compile(r'src="[^"]*/t/o/([^"]+)\.gif"')


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


# --- tracking --------------------------------------------------------------------------


def parse_email(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def tracked_readers(
    session: Session, mode: TrackingMode, opens: bool = True, readers: int = 3
) -> tuple[MailingList, list[Subscriber]]:
    """The sample articles, and the list clinic-news tracked in `mode` (with the pixel
    if `opens`) whose confirmed members are reader0@example.org ("Reader 0") on."""
    import_sample(session)
    news = make_list(session)
    news.tracking, news.track_opens = mode, opens
    members = [
        add_member(session, news, f"reader{i}@example.org", f"Reader {i}") for i in range(readers)
    ]
    return news, members


def send_into_memory(
    session: Session, settings: Settings, campaign: Campaign
) -> tuple[int, dict[str, EmailMessage]]:
    """A run of the campaign sent now by the real chunk sender into a MemoryMailer:
    the run's id and each reader's email by address."""
    run_id, chunks = start_run(session, campaign)
    mailer = MemoryMailer()
    sender = ChunkSender(settings, mailer)
    for chunk in chunks:
        sender.send_chunk(session, chunk, "test-claim")
    sender.close(session.get_bind())  # type: ignore[arg-type]
    return run_id, {sent.recipient: parse_email(sent.data) for sent in mailer.messages}


def hit(
    session: Session,
    settings: Settings,
    token: str,
    kind: EventKind = EventKind.click,
    agent: str = BROWSER,
    method: str = "GET",
    machine_seconds: float = 0,
) -> str | None:
    """A reader's (or a machine's) click or open of the link or pixel with this token,
    recorded and committed by the function the public routes call; where a click goes."""
    config = TrackingConfig(settings.secret_key, machine_seconds, settings.tracking_burst_seconds)
    request = HitRequest(method, agent, {}, "192.0.2.7")
    return record_hit(
        session, TrackingSigner(settings.secret_key).verify(token), kind, request, config
    )


def drip_with_events(session: Session, settings: Settings) -> tuple[int, list[Article]]:
    """A drip sequence of the sample series on an anonymously tracked list, its step 1
    sent to three readers and step 2 to two; in step 1 two people opened, one clicked,
    and a script (python-requests) clicked too. The sequence's id and the series'
    articles in order."""
    news, readers = tracked_readers(session, TrackingMode.anonymous)
    sequence = create_sequence(session, series_slug=SERIES, list_slug=news.slug, every="7d")
    articles = list(
        session.scalars(
            select(Article).where(Article.series_id.is_not(None)).order_by(Article.position)
        )
    )
    mailer = MemoryMailer()
    sender = ChunkSender(settings, mailer)
    for article, audience in ((articles[0], readers), (articles[1], readers[:2])):
        run = Run(
            sequence_id=sequence.id,
            article_id=article.id,
            occurrence_at=utcnow(),
            status=RunStatus.sending,
            started_at=utcnow(),
        )
        session.add(run)
        session.flush()
        for reader in audience:
            session.add(
                Delivery(
                    run_id=run.id, subscriber_id=reader.id, list_id=news.id, email=reader.email
                )
            )
        session.commit()
        sender.send_chunk(session, Chunk(run.id, readers[0].id, readers[-1].id), "task")
    sender.close(session.get_bind())  # type: ignore[arg-type]
    first_step = [html_of(parse_email(m.data)) for m in mailer.messages[:3]]
    hit(session, settings, PIXEL.findall(first_step[0])[0], EventKind.open)
    hit(session, settings, PIXEL.findall(first_step[1])[0], EventKind.open)
    hit(session, settings, TRACKED.findall(first_step[0])[0])
    hit(session, settings, TRACKED.findall(first_step[2])[0], agent="python-requests/2.32")
    return sequence.id, articles


def wrong_totp_code(secret: str) -> str:
    """Six digits that are none of the codes the secret accepts now (the current one,
    the one before and the one after)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    accepted = {totp.at(now + step * totp.interval) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in accepted)

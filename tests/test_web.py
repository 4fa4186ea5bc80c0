"""The public web app: RFC 8058 unsubscribe, preferences, archive, health."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList, Subscription, SubscriptionStatus
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.runs.ledger import Chunk
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
from newsletter.web.app import create_app
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def member(session: Session) -> tuple[int, int]:
    news = make_list(session)
    subscriber = add_member(session, news, "reader@example.org", "Reader")
    session.commit()
    return subscriber.id, news.id


def status_of(session: Session, subscriber_id: int, list_id: int) -> SubscriptionStatus:
    session.expire_all()
    return (
        session.query(Subscription)
        .filter_by(subscriber_id=subscriber_id, list_id=list_id)
        .one()
        .status
    )


def test_one_click_post_unsubscribes_without_cookie_or_redirect(
    client: TestClient, session: Session, settings: Settings
) -> None:
    subscriber_id, list_id = member(session)
    token = TokenSigner(settings.secret_key).sign(Purpose.unsubscribe, subscriber_id, list_id)
    response = client.post(
        f"/unsubscribe/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert status_of(session, subscriber_id, list_id) is SubscriptionStatus.unsubscribed


def test_get_on_the_unsubscribe_link_only_shows_a_button(
    client: TestClient, session: Session, settings: Settings
) -> None:
    subscriber_id, list_id = member(session)
    token = TokenSigner(settings.secret_key).sign(Purpose.unsubscribe, subscriber_id, list_id)
    response = client.get(f"/unsubscribe/{token}")
    assert response.status_code == 200
    assert '<form method="post"' in response.text
    assert status_of(session, subscriber_id, list_id) is SubscriptionStatus.confirmed


@pytest.mark.parametrize("purpose", [Purpose.preferences, Purpose.confirm])
def test_a_token_of_another_purpose_or_altered_changes_nothing(
    client: TestClient, session: Session, settings: Settings, purpose: Purpose
) -> None:
    subscriber_id, list_id = member(session)
    signer = TokenSigner(settings.secret_key)
    wrong_purpose = signer.sign(purpose, subscriber_id, list_id)
    genuine = signer.sign(Purpose.unsubscribe, subscriber_id, list_id)
    altered = genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB")
    forged = TokenSigner("another-secret").sign(Purpose.unsubscribe, subscriber_id, list_id)
    for token in (wrong_purpose, altered, forged):
        assert client.post(f"/unsubscribe/{token}").status_code == 400
    assert status_of(session, subscriber_id, list_id) is SubscriptionStatus.confirmed


def test_no_mail_after_an_unsubscribe_recorded_mid_run(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    news = make_list(session)
    leaving = add_member(session, news, "leaving@example.org")
    add_member(session, news, "staying@example.org")
    campaign = series_digest(session, ["clinic-news"])
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    chunks: list[Chunk] = []
    fan_out_campaign_run(make_sessionmaker(session.get_bind()), run_id, 100, chunks.append)  # type: ignore[arg-type]
    token = TokenSigner(settings.secret_key).sign(Purpose.unsubscribe, leaving.id, news.id)
    assert client.post(f"/unsubscribe/{token}").status_code == 200
    mailer = MemoryMailer()
    for chunk in chunks:
        ChunkSender(settings, mailer).send_chunk(session, chunk, "test-claim")
    assert [m.recipient for m in mailer.messages] == ["staying@example.org"]
    left = session.query(Delivery).filter_by(subscriber_id=leaving.id).one()
    assert left.status is DeliveryStatus.suppressed


def test_article_page_links_previous_and_next(client: TestClient, session: Session) -> None:
    import_sample(session)
    session.commit()
    page = client.get("/articles/continuing-care").text
    assert "Part 3 of 5" in page
    assert "Previous: What happens at an infusion appointment" in page
    assert "Next: Transcranial magnetic stimulation (TMS): a plain guide" in page
    assert client.get("/articles/no-such-article").status_code == 404


def test_archive_shows_the_frozen_email_of_a_run(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    news = make_list(session)
    add_member(session, news, "reader@example.org")
    campaign = series_digest(session, ["clinic-news"], subject="Archived digest")
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    fan_out_campaign_run(make_sessionmaker(session.get_bind()), run_id, 100, lambda c: None)  # type: ignore[arg-type]
    ChunkSender(settings, MemoryMailer()).send_chunk(session, Chunk(run_id, 0, 10**9), "test-claim")
    page = client.get(f"/archive/runs/{run_id}")
    assert page.status_code == 200
    assert "Ketamine infusions" in page.text and "__slot_" not in page.text


def test_readyz_reports_database_migrations_and_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "migrations": "ok", "broker": "ok"}


def sent_run(session: Session, settings: Settings, subject: str) -> int:
    """A campaign run that went out to one reader."""
    news = session.query(MailingList).filter_by(slug="clinic-news").one_or_none()
    if news is None:
        news = make_list(session)
        add_member(session, news, "reader@example.org")
    campaign = series_digest(session, ["clinic-news"], subject=subject)
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    fan_out_campaign_run(make_sessionmaker(session.get_bind()), run_id, 100, lambda c: None)  # type: ignore[arg-type]
    ChunkSender(settings, MemoryMailer()).send_chunk(session, Chunk(run_id, 0, 10**9), "test-claim")
    return run_id


def test_archive_lists_sent_runs_newest_first_and_published_articles_in_series_order(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    older = sent_run(session, settings, "September digest")
    newer = sent_run(session, settings, "News for {{ slot('name', 'there') }}")
    session.get_one(Run, older).started_at = utcnow() - timedelta(days=30)
    failed = Run(
        campaign_id=session.get_one(Run, older).campaign_id,
        occurrence_at=utcnow(),
        status=RunStatus.failed,
        error="could not render",
    )
    session.add(failed)
    draft = session.query(Article).filter_by(slug="after-treatment").one()
    draft.published_at = None
    session.commit()

    page = client.get("/archive")

    assert page.status_code == 200
    text = page.text
    assert text.index("News for there") < text.index("September digest")
    assert f"/archive/runs/{newer}" in text and f"/archive/runs/{older}" in text
    assert f"/archive/runs/{failed.id}" not in text and "__slot_" not in text
    assert "Understanding treatment options" in text
    assert "Part 3 of 4" in text and "/articles/continuing-care" in text
    assert "After a course of treatment" not in text


def test_subscribe_page_offers_every_list_and_a_hidden_honeypot(
    client: TestClient, session: Session
) -> None:
    make_list(session, "clinic-news", "Clinic news")
    make_list(session, "events", "Events")
    session.commit()
    page = client.get("/subscribe?list=events").text
    assert 'value="clinic-news"' in page
    assert 'value="events" checked' in page and 'value="clinic-news" checked' not in page
    assert 'name="website"' in page and 'class="hp"' in page

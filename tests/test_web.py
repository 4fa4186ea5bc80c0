"""The public web app: RFC 8058 unsubscribe, preferences, archive, health."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from newsletter.audience.models import (
    ArchiveVisibility,
    MailingList,
    Subscription,
    SubscriptionStatus,
)
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
from newsletter.web.archive import ARTICLES_PER_PAGE, EMAILS_PER_PAGE
from tests.factories import (
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)


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


def test_archive_shows_the_frozen_email_of_a_run_with_neutral_values(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    run_id = sent_run(session, settings, "{{ slot('name', 'Reader') }}, your digest")
    run = session.get_one(Run, run_id)

    page = client.get(f"/archive/emails/{run.archive_key}")

    assert page.status_code == 200
    assert "Ketamine infusions" in page.text and "__slot_" not in page.text
    # No reader's greeting, address or links: a sentence says where theirs are.
    assert "Hello" not in page.text and " as ." not in page.text
    assert 'href="#' not in page.text and "/unsubscribe/" not in page.text
    assert "Each subscriber's own copy has their unsubscribe and preferences links" in page.text
    assert "12 River Road" in page.text  # the sender's postal address stays
    listed = client.get("/archive").text
    assert "Reader, your digest" in listed and "there," not in listed


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


def test_archive_lists_sent_runs_newest_first_and_published_articles_with_their_series(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    older = session.get_one(Run, sent_run(session, settings, "September digest"))
    newer = session.get_one(Run, sent_run(session, settings, "News for {{ slot('name', 'you') }}"))
    older.started_at = utcnow() - timedelta(days=30)
    failed = Run(
        campaign_id=older.campaign_id,
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
    assert text.index("News for you") < text.index("September digest")
    assert f"/archive/emails/{newer.archive_key}" in text
    assert f"/archive/emails/{older.archive_key}" in text
    assert f"/archive/emails/{failed.archive_key}" not in text and "__slot_" not in text
    assert "/archive/runs/" not in text  # no sequential ids
    assert "Understanding treatment options &middot; Part 3 of 4" in text
    assert "/articles/continuing-care" in text and "/archive/series/understanding-treatment" in text
    assert "After a course of treatment" not in text
    series = client.get("/archive/series/understanding-treatment").text
    assert series.index("Part 1 of 4") < series.index("Part 4 of 4")


def test_a_private_lists_emails_are_not_listed_but_open_at_their_link(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    staff = make_list(session, "staff-news", "Staff news", archive=ArchiveVisibility.private)
    add_member(session, staff, "nurse@example.org")
    campaign = series_digest(session, ["staff-news"], subject="Rota changes")
    run_id, chunks = start_run(session, campaign)
    ChunkSender(settings, MemoryMailer()).send_chunk(session, chunks[0], "test-claim")
    run = session.get_one(Run, run_id)

    assert "Rota changes" not in client.get("/archive").text
    assert client.get(f"/archive/emails/{run.archive_key}").status_code == 200
    assert client.get(f"/archive/runs/{run_id}").status_code == 404
    assert client.get("/archive/emails/not-a-key").status_code == 404


def test_a_list_created_now_has_a_private_archive(session: Session) -> None:
    from newsletter.audience.lists import create_list

    assert create_list(session, "new-list", "New list").archive is ArchiveVisibility.private


def test_L3_cancelled_runs_are_not_readable_in_the_archive(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    run = session.get_one(Run, sent_run(session, settings, "Sent, then withdrawn"))
    assert client.get(f"/archive/emails/{run.archive_key}").status_code == 200
    run.status = RunStatus.cancelled
    session.commit()

    assert client.get(f"/archive/emails/{run.archive_key}").status_code == 404
    assert client.get(f"/archive/runs/{run.id}").status_code == 404
    assert "Sent, then withdrawn" not in client.get("/archive").text


def test_an_old_numbered_link_to_a_public_email_still_leads_to_it(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    run = session.get_one(Run, sent_run(session, settings, "Old link"))

    answer = client.get(f"/archive/runs/{run.id}")

    assert answer.status_code == 301
    assert answer.headers["location"] == f"{settings.base_url}/archive/emails/{run.archive_key}"


def test_L4_the_archive_is_paged_by_keyset_and_each_page_is_bounded(
    client: TestClient, session: Session, settings: Settings
) -> None:
    news = make_list(session)
    add_member(session, news, "reader@example.org")
    start = utcnow() - timedelta(days=400)
    session.add_all(
        Article(
            slug=f"note-{n:03d}",
            title=f"Note {n:03d}",
            body_html="<p>.</p>",
            published_at=start + timedelta(days=n),
        )
        for n in range(ARTICLES_PER_PAGE * 2 + 5)
    )
    session.commit()

    first = client.get("/archive").text
    assert first.count("/articles/note-") == ARTICLES_PER_PAGE
    assert "Note 104" in first and "Note 054" not in first
    older = re.search(r'href="([^"]*/archive\?articles=[^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert second.count("/articles/note-") == ARTICLES_PER_PAGE
    assert "Note 054" in second and "Note 104" not in second and "Note 004" not in second
    third_link = re.search(r'href="([^"]*/archive\?articles=[^"]+)"', second)
    assert third_link is not None
    third = client.get(third_link.group(1)).text
    assert third.count("/articles/note-") == 5 and "Older articles" not in third


def test_L4_the_emails_of_the_archive_are_paged_too(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    for n in range(EMAILS_PER_PAGE + 2):
        sent_run(session, settings, f"Digest number {n:02d}")

    first = client.get("/archive").text
    assert first.count("/archive/emails/") == EMAILS_PER_PAGE
    older = re.search(r'href="([^"]*/archive\?emails=[^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1)).text
    assert second.count("/archive/emails/") == 2 and "Digest number 00" in second


def test_L6_archived_emails_are_served_sandboxed_without_scripts(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    run = session.get_one(Run, sent_run(session, settings, "Plain digest"))
    # A stored template may contain markup the sandbox cannot know is harmless.
    snapshot = dict(run.snapshot or {})
    snapshot["html"] = snapshot["html"].replace("</body>", "<script>alert(1)</script></body>")
    run.snapshot = snapshot
    session.commit()

    page = client.get(f"/archive/emails/{run.archive_key}")

    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    directives = {d.strip().split()[0]: d.strip() for d in policy.split(";")}
    assert "sandbox" in directives and "allow-scripts" not in directives["sandbox"]
    assert "allow-same-origin" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in policy


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

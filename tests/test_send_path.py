"""The whole path, article to inbox, on real services."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy.orm import Session

from newsletter.audience.models import SubscriptionStatus
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.mailers import MemoryMailer
from newsletter.delivery.sending import ChunkSender
from newsletter.runs.ledger import Chunk
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
from newsletter.tasks.app import configure, embedded_worker, runtime
from newsletter.tasks.scheduler import tick
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.processes import WorkerProcess
from tests.smtp_sink import SmtpSink

CONFIRMED = 25


def build_audience_and_campaign(settings: Settings) -> int:
    """25 confirmed readers, plus people who must not get the email; a scheduled digest."""
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        other = make_list(session, "other", "Other list")
        for i in range(CONFIRMED):
            add_member(session, news, f"reader{i}@example.org", f"Reader {i}")
        add_member(session, news, "pending@example.org", status=SubscriptionStatus.unconfirmed)
        add_member(session, news, "left@example.org", status=SubscriptionStatus.unsubscribed)
        add_member(session, other, "elsewhere@example.org")
        campaign = series_digest(session, ["clinic-news"], subject="Hello {{ slot('name') }}")
        schedule_campaign(session, campaign.id, utcnow())
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    return campaign_id


def wait_until_finished(settings: Settings, campaign_id: int, timeout: float = 90) -> None:
    configure(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick(runtime())
        with runtime().sessions() as session:
            campaign = session.get_one(Campaign, campaign_id)
            if campaign.status is CampaignStatus.finished:
                return
        time.sleep(0.2)
    raise AssertionError("the run did not finish in time")


def assert_inbox_is_right(sink: SmtpSink) -> None:
    recipients = sink.handler.recipients()
    assert Counter(recipients) == Counter(f"reader{i}@example.org" for i in range(CONFIRMED))
    message_ids = set()
    for received in sink.handler.received:
        message = received.message
        assert message.get_content_type() == "multipart/alternative"
        assert message["To"].addresses[0].addr_spec == received.recipient
        assert message["Subject"].startswith("Hello Reader ")
        assert message["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe/")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "clinic-news." in message["List-Id"]
        assert message["Date"] is not None
        message_ids.add(message["Message-ID"])
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        assert 'style="' in html and "Next: What happens at an infusion appointment" in html
        assert "Previous: Ketamine infusions" in text
        assert "__slot_" not in html and "__slot_" not in text
    assert len(message_ids) == CONFIRMED


def test_full_path_on_sqlite_with_the_embedded_broker(sqlite_url: str, smtp_sink: SmtpSink) -> None:
    settings = settings_for(sqlite_url, mail_url=smtp_sink.url, broker_url="memory://localhost/")
    campaign_id = build_audience_and_campaign(settings)
    configure(settings)
    with embedded_worker():
        wait_until_finished(settings, campaign_id)
    runtime().close()
    assert_inbox_is_right(smtp_sink)


@pytest.fixture
def redis_broker_url() -> str:
    """A Redis database of the shared server kept for these tests, emptied first."""
    url = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/11"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def celery_worker_process(
    pg_url: str, redis_broker_url: str, smtp_sink: SmtpSink
) -> Iterator[Settings]:
    settings = settings_for(pg_url, mail_url=smtp_sink.url, broker_url=redis_broker_url)
    worker = WorkerProcess(settings).start()
    try:
        yield settings
    finally:
        worker.stop()


def test_full_path_on_postgresql_with_redis_and_a_celery_worker(
    celery_worker_process: Settings, smtp_sink: SmtpSink
) -> None:
    settings = celery_worker_process
    campaign_id = build_audience_and_campaign(settings)
    wait_until_finished(settings, campaign_id)
    runtime().close()
    assert_inbox_is_right(smtp_sink)


def _send_run_directly(
    session: Session, settings: Settings, sender: ChunkSender, run_id: int
) -> None:
    chunks: list[Chunk] = []
    fan_out_campaign_run(make_sessionmaker(session.get_bind()), run_id, 10, chunks.append)  # type: ignore[arg-type]
    for chunk in chunks:
        sender.send_chunk(session, chunk, "test-claim")


def test_sending_the_same_run_twice_sends_nothing_new(database_url: str) -> None:
    settings = settings_for(database_url, chunk_size=10)
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(23):
            add_member(session, news, f"reader{i}@example.org")
        campaign = series_digest(session, ["clinic-news"])
        schedule_campaign(session, campaign.id, utcnow())
        [run_id] = claim_due_campaigns(session, utcnow())
        session.commit()
        mailer = MemoryMailer()
        sender = ChunkSender(settings, mailer)
        _send_run_directly(session, settings, sender, run_id)
        assert len(mailer.messages) == 23
        _send_run_directly(session, settings, sender, run_id)
        assert len(mailer.messages) == 23
        assert session.query(Delivery).filter_by(run_id=run_id).count() == 23
        assert session.get_one(Run, run_id).status is RunStatus.finished
        assert {d.status for d in session.query(Delivery)} == {DeliveryStatus.sent}
    engine.dispose()

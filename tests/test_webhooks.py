"""Outgoing webhooks: a real scenario's events reach a local HTTPS receiver, signed; a
failing receiver is retried with backoff, then disabled with an audit entry; URLs
are checked when saved and again at each send."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.accounts import audit
from newsletter.accounts.models import AuditEntry
from newsletter.audience.models import SubscriptionStatus
from newsletter.audience.subscribers import upsert_subscribers
from newsletter.audience.subscriptions import confirm_pending
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.errors import InvalidInputError
from newsletter.events.models import OutboxStatus, WebhookAttempt, WebhookEndpoint, WebhookOutbox
from newsletter.services import webhooks
from newsletter.tasks.app import configure, embedded_worker, runtime
from newsletter.tasks.scheduler import tick
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.smtp_sink import SmtpSink
from tests.webhook_receiver import Receiver

SIGNATURE = re.compile(r"^t=(\d+),v1=([0-9a-f]{64})$")


def webhook_settings(url: str, receiver: Receiver, **overrides: object) -> Settings:
    return settings_for(
        url,
        broker_url="memory://localhost/",
        webhooks_allow_private=True,  # the receiver listens on 127.0.0.1
        webhooks_ca_file=str(receiver.cert),
        **overrides,
    )


def tick_until(settings: Settings, done: Callable[[], bool], timeout: float = 60) -> None:
    """Run scheduler ticks (the embedded worker runs the tasks) until `done()`."""
    configure(settings)
    deadline = time.monotonic() + timeout
    with embedded_worker():
        while not done():
            assert time.monotonic() < deadline, "timed out"
            tick(runtime())
            time.sleep(0.1)
    runtime().close()


def signed_by(secret: str, header: str, body: bytes) -> bool:
    """The receiver's side, written out independently of services/webhooks.py."""
    match = SIGNATURE.match(header)
    assert match, header
    timestamp, mac = match.groups()
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return (
        hmac.compare_digest(expected.hexdigest(), mac) and abs(time.time() - int(timestamp)) < 300
    )


def test_a_real_scenario_reaches_an_https_receiver_signed(
    sqlite_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    with Receiver(tmp_path) as receiver:
        settings = webhook_settings(sqlite_url, receiver, mail_url=smtp_sink.url)
        engine = make_engine(sqlite_url)
        with make_sessionmaker(engine)() as session:
            audit.act_as(session, audit.Actor.cli())
            made = webhooks.create_endpoint(session, settings, receiver.url, ["*"], "CRM")
            import_sample(session)
            news = make_list(session)
            people = [{"email": "ann@example.org"}, {"email": "ben@example.org"}]
            upsert_subscribers(session, "clinic-news", people)
            # cai signed up on the form and follows the confirmation link.
            cai = add_member(
                session, news, "cai@example.org", status=SubscriptionStatus.unconfirmed
            )
            confirm_pending(session, cai.id, news.id)
            campaign = series_digest(session, ["clinic-news"])
            schedule_campaign(session, campaign.id, utcnow())
            session.commit()
            secret, campaign_id = made.secret, campaign.id
        engine.dispose()

        def finished_and_told() -> bool:
            return "campaign.finished" in receiver.events()

        tick_until(settings, finished_and_told)
    readers = ["ann@example.org", "ben@example.org", "cai@example.org"]
    assert sorted(smtp_sink.handler.recipients()) == readers
    events = receiver.events()
    assert events.count("subscriber.created") == 2
    for expected in ("subscriber.confirmed", "campaign.scheduled", "campaign.started"):
        assert expected in events
    for request in receiver.received:
        assert request.path == "/hooks"
        assert request.headers["content-type"] == "application/json"
        assert signed_by(secret, request.headers["newsletter-signature"], request.body)
        assert webhooks.verify(secret, request.headers["newsletter-signature"], request.body)
        assert not webhooks.verify(
            "whsec_wrong", request.headers["newsletter-signature"], request.body
        )
        body = json.loads(request.body)
        assert body["id"] == request.headers["newsletter-event-id"]
        assert body["type"] == request.headers["newsletter-event"]
    finished = next(json.loads(r.body) for r in receiver.received if b"campaign.finished" in r.body)
    assert finished["data"]["campaign_id"] == campaign_id
    assert finished["data"]["recipients"] == 3
    with make_sessionmaker(make_engine(sqlite_url))() as session:
        attempts = session.scalars(select(WebhookAttempt)).all()
        assert len(attempts) == len(receiver.received)
        assert {(a.ok, a.status_code, a.response_excerpt) for a in attempts} == {
            (True, 200, '{"ok": true}')
        }
        assert session.get_one(Campaign, campaign_id).status is CampaignStatus.finished


def test_a_failing_receiver_is_retried_with_backoff_then_disabled_and_audited(
    sqlite_url: str, tmp_path: Path
) -> None:
    with Receiver(tmp_path, status=500, answer=b"database is down " * 100) as receiver:
        settings = webhook_settings(
            sqlite_url,
            receiver,
            webhooks_retry_base_seconds=0.3,
            webhooks_disable_after=3,
            webhooks_disable_min_hours=0,
        )
        engine = make_engine(sqlite_url)
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            audit.act_as(session, audit.Actor.cli())
            endpoint_id = webhooks.create_endpoint(
                session, settings, receiver.url, ["subscriber.created"]
            ).endpoint.id
            make_list(session)
            upsert_subscribers(session, "clinic-news", [{"email": "ann@example.org"}])
            session.commit()

        def disabled() -> bool:
            with sessions() as session:
                return not session.get_one(WebhookEndpoint, endpoint_id).enabled

        tick_until(settings, disabled)
        posts = len(receiver.received)
    assert posts == 3
    with sessions() as session:
        endpoint = session.get_one(WebhookEndpoint, endpoint_id)
        assert endpoint.failure_count == 3
        assert "3 failed attempts in a row" in endpoint.disabled_reason
        assert "HTTP 500" in endpoint.disabled_reason
        attempts = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()
        assert [(a.ok, a.status_code) for a in attempts] == [(False, 500)] * 3
        assert all(len(a.response_excerpt) == 500 for a in attempts)
        assert attempts[0].response_excerpt.startswith("database is down")
        gaps = [
            (b.attempted_at - a.attempted_at).total_seconds()
            for a, b in itertools.pairwise(attempts)
        ]
        assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # 0.3 s, then doubled
        row = session.scalars(select(WebhookOutbox)).one()
        assert row.status is OutboxStatus.pending and row.attempts == 3  # waits for enable
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "webhook.disabled")
        ).one()
        assert entry.actor == "system:webhooks"
        assert entry.target == f"webhook:{endpoint_id}"
        assert entry.after is not None and entry.after["enabled"] is False
        # Nothing more is claimed for a disabled endpoint.
        assert webhooks.claim_due(session, utcnow()) == []
    engine.dispose()


def test_urls_must_be_https_and_public_unless_allowed(sqlite_url: str, session: Session) -> None:
    production = settings_for(sqlite_url)
    refusals = {
        "http://hooks.example.org/x": "url: must be https://",
        "https://127.0.0.1/hooks": "loopback address",
        "https://10.1.2.3/hooks": "private address",
        "https://169.254.169.254/latest": "link-local address",
        "https://user:pw@hooks.example.org/": "user name or password",
        "ftp://hooks.example.org/": "must be an https:// URL",
    }
    for url, message in refusals.items():
        with pytest.raises(InvalidInputError, match=re.escape(message)):
            webhooks.create_endpoint(session, production, url, ["*"])
    with pytest.raises(InvalidInputError, match=r"events: unknown event 'campaign\.sent'"):
        webhooks.create_endpoint(session, production, "https://93.184.215.14/x", ["campaign.sent"])


def test_the_address_is_checked_again_at_send_time(sqlite_url: str, tmp_path: Path) -> None:
    with Receiver(tmp_path) as receiver:
        allowed = webhook_settings(sqlite_url, receiver)
        sessions = make_sessionmaker(make_engine(sqlite_url))
        with sessions() as session:
            endpoint = webhooks.create_endpoint(session, allowed, receiver.url, ["*"]).endpoint
            row_id = webhooks.send_test(session, endpoint.id).id
            session.commit()
        strict = settings_for(sqlite_url, webhooks_ca_file=str(receiver.cert))
        outcome = webhooks.deliver(sessions, row_id, strict, webhooks.http_poster(strict))
        assert outcome == "failed"
        assert receiver.received == []
        with sessions() as session:
            attempt = session.scalars(select(WebhookAttempt)).one()
            assert "loopback address" in attempt.error
            assert attempt.status_code is None
        # Allowed again (the setting): the test event goes through.
        with sessions() as session:
            row_id = webhooks.send_test(session, endpoint.id).id
            session.commit()
        assert webhooks.deliver(sessions, row_id, allowed, webhooks.http_poster(allowed)) == (
            "delivered"
        )
        assert receiver.events() == ["webhook.test"]


def test_events_commit_with_their_change_and_a_lost_task_is_claimed_again(
    sqlite_url: str, tmp_path: Path
) -> None:
    from datetime import timedelta

    with Receiver(tmp_path) as receiver:
        settings = webhook_settings(sqlite_url, receiver)
        sessions = make_sessionmaker(make_engine(sqlite_url))
        with sessions() as session:
            webhooks.create_endpoint(session, settings, receiver.url, ["subscriber.created"])
            make_list(session)
            session.commit()
            upsert_subscribers(session, "clinic-news", [{"email": "gone@example.org"}])
            session.rollback()  # the change is undone: so is its event
            assert session.scalars(select(WebhookOutbox)).all() == []
            upsert_subscribers(session, "clinic-news", [{"email": "ann@example.org"}])
            session.commit()
        now = utcnow()
        with sessions() as session:
            [row_id] = webhooks.claim_due(session, now)
            session.commit()
        # The task is lost (Redis flushed, worker killed): while its lease lasts nobody
        # else takes the row; after it, the sweep claims it again and it is delivered.
        with sessions() as session:
            assert webhooks.claim_due(session, now + timedelta(seconds=30)) == []
            assert webhooks.claim_due(session, now + webhooks.LEASE * 2) == [row_id]
            session.commit()
        post = webhooks.http_poster(settings)
        assert webhooks.deliver(sessions, row_id, settings, post) == "delivered"
        assert webhooks.deliver(sessions, row_id, settings, post) == "skipped"  # done once
        assert receiver.events() == ["subscriber.created"]


def test_forgetting_a_person_removes_their_events_and_tells_receivers_the_id(
    session: Session,
) -> None:
    from newsletter.services.data_rights import forget

    settings = settings_for("sqlite://", webhooks_allow_private=True)
    webhooks.create_endpoint(session, settings, "https://127.0.0.1/hooks", ["*"])
    news = make_list(session)
    upsert_subscribers(session, "clinic-news", [{"email": "ann@example.org"}])
    ben = add_member(session, news, "ben@example.org", status=SubscriptionStatus.unconfirmed)
    confirm_pending(session, ben.id, news.id)
    session.commit()
    ben_id = ben.id
    assert len(session.scalars(select(WebhookOutbox)).all()) == 2
    forget(session, "ben@example.org")
    session.commit()
    rows = session.scalars(select(WebhookOutbox).order_by(WebhookOutbox.id)).all()
    assert [(r.event, r.data) for r in rows] == [
        (
            "subscriber.created",
            {"subscriber_id": rows[0].data["subscriber_id"], "email": "ann@example.org"},
        ),
        ("subscriber.forgotten", {"subscriber_id": ben_id}),
    ]


def test_a_csv_import_tells_of_each_new_subscriber_and_of_its_end(session: Session) -> None:
    from newsletter.audience.importer import run_import

    settings = settings_for("sqlite://", webhooks_allow_private=True)
    webhooks.create_endpoint(session, settings, "https://127.0.0.1/h", ["*"])
    make_list(session)
    session.commit()
    csv_text = "email,name\nann@example.org,Ann\nnot-an-address,Bad\nben@example.org,Ben\n"
    run_import(session, csv_text, "people.csv", "clinic-news", dry_run=True)
    session.commit()
    assert session.scalars(select(WebhookOutbox.event)).all() == []  # a dry run: nothing
    job, _ = run_import(session, csv_text, "people.csv", "clinic-news")
    session.commit()
    rows = session.scalars(select(WebhookOutbox).order_by(WebhookOutbox.id)).all()
    assert [r.event for r in rows] == ["subscriber.created"] * 2 + ["import.finished"]
    assert rows[-1].data == {"import_id": job.id, "list": "clinic-news", "rejected": 1}


def test_pausing_failing_and_stalling_are_told_from_where_they_happen(session: Session) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from newsletter.campaigns.control import pause_campaign
    from newsletter.campaigns.runs import fail_campaign_run
    from newsletter.runs.lifecycle import recover_stalled
    from newsletter.runs.models import Run
    from tests.factories import start_run

    settings = settings_for("sqlite://", webhooks_allow_private=True)
    webhooks.create_endpoint(session, settings, "https://127.0.0.1/h", ["*"])
    import_sample(session)
    news = make_list(session)
    add_member(session, news, "ann@example.org")
    campaign = series_digest(session, ["clinic-news"])
    run_id, _ = start_run(session, campaign)
    now = utcnow()
    session.execute(
        update(Run).where(Run.id == run_id).values(last_progress_at=now - timedelta(minutes=5))
    )
    recover_stalled(session, now, timedelta(seconds=60), 100)
    recover_stalled(session, now + timedelta(minutes=5), timedelta(seconds=60), 100)  # once
    pause_campaign(session, campaign.id)
    other = series_digest(session, ["clinic-news"], subject="Other")
    other_run, _ = start_run(session, other)
    fail_campaign_run(session, other_run, "the template broke\nat line 3")
    session.commit()
    rows = session.scalars(select(WebhookOutbox).order_by(WebhookOutbox.id)).all()
    told = [(r.event, r.data.get("run_id"), r.data.get("campaign_id")) for r in rows]
    assert told == [
        ("campaign.scheduled", None, campaign.id),
        ("campaign.started", run_id, campaign.id),
        ("run.stalled", run_id, campaign.id),
        ("campaign.paused", None, campaign.id),
        ("campaign.scheduled", None, other.id),
        ("campaign.started", other_run, other.id),
        ("campaign.failed", other_run, other.id),
    ]
    assert rows[-1].data["error"] == "the template broke"

"""Signup with double opt-in, confirmation, editable preferences and rate limits.

The first test drives the real app under uvicorn with httpx, as a browser would,
reading the confirmation email from a real SMTP server; the rest use TestClient
against the same SMTP sink, waiting for the app's queue of confirmations to empty
(`settle`) before they look at what was sent.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from newsletter.audience.addresses import email_hash
from newsletter.audience.models import (
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.config import Settings, load_settings
from newsletter.db import utcnow
from newsletter.ratelimit import (
    Limit,
    MemoryRateLimiter,
    RateLimiter,
    RateLimiterUnavailableError,
    RedisRateLimiter,
    make_rate_limiter,
)
from newsletter.sequences.engine import sync_enrollments
from newsletter.sequences.models import Enrollment, EnrollmentStatus
from newsletter.sequences.service import create_sequence
from newsletter.web.app import create_app
from newsletter.web.common import SignupPolicy
from newsletter.web.subscriber import csrf_token
from tests.conftest import REDIS_URL
from tests.factories import add_member, import_sample, make_list, settings_for
from tests.smtp_sink import Received, SmtpSink, free_port

GENEROUS = SignupPolicy(
    per_ip=Limit("signup-ip", 1000, 600),
    per_address=Limit("signup-address", 1000, 86400),
    confirm_ttl_seconds=3 * 86400,
)
FORM = {"content-type": "application/x-www-form-urlencoded"}


# --- fixtures and helpers -----------------------------------------------------------


@pytest.fixture
def settings(database_url: str, smtp_sink: SmtpSink) -> Settings:
    return settings_for(database_url, mail_url=smtp_sink.url)


def client_for(
    settings: Settings, policy: SignupPolicy = GENEROUS, limiter: RateLimiter | None = None
) -> TestClient:
    app = create_app(settings, policy=policy, rate_limiter=limiter or MemoryRateLimiter())
    return TestClient(app, follow_redirects=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as client:
        yield client


def lists(session: Session) -> None:
    make_list(session, "clinic-news", "Clinic news")
    make_list(session, "events", "Events")
    session.commit()


def subscription(session: Session, email: str, slug: str) -> Subscription:
    session.expire_all()
    return (
        session.query(Subscription)
        .join(Subscriber)
        .filter(Subscriber.email == email, Subscription.mailing_list.has(slug=slug))
        .one()
    )


def bodies(received: Received) -> str:
    """Every header and decoded text part of a received message, as one string."""
    message = received.message
    parts = [str(v) for v in message.values()]
    parts += [part.get_content() for part in message.walk() if not part.is_multipart()]
    return "\n".join(parts)


def confirm_links(received: Received) -> list[str]:
    text = received.message.get_body(("plain",))
    assert text is not None
    return re.findall(r"https?://\S+/confirm/\S+", text.get_content())


def wait_for_mail(sink: SmtpSink, count: int, timeout: float = 5.0) -> list[Received]:
    deadline = time.monotonic() + timeout
    while sink.handler.count() < count and time.monotonic() < deadline:
        time.sleep(0.02)
    with sink.handler.lock:
        return list(sink.handler.received)


def settle(client: TestClient) -> None:
    """Wait until the confirmations the app queued have been handed to the relay."""
    assert client.app.state.confirmations.drain(10)  # type: ignore[attr-defined]


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no field {name}"
    return match.group(1)


# --- the whole path against a running server ----------------------------------------


@dataclass
class LiveServer:
    url: str
    settings: Settings


@pytest.fixture
def live_server(
    database_url: str, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """The app under uvicorn on a free port, configured from NEWSLETTER_* variables."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for name, value in {
        "DATABASE_URL": database_url,
        "MAIL_URL": smtp_sink.url,
        "BASE_URL": url,
        "SECRET_KEY": "live-server-secret-of-32-bytes-or-more",
        "FROM_ADDRESS": "Riverside Clinic <news@clinic.example>",
        "BROKER_URL": "memory://localhost/",
        "REDIS_URL": "",
    }.items():
        monkeypatch.setenv(f"NEWSLETTER_{name}", value)
    settings = load_settings()
    app = create_app(settings, policy=GENEROUS)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield LiveServer(url, settings)
    server.should_exit = True
    thread.join(timeout=10)


def test_subscribe_confirm_edit_preferences_and_unsubscribe_in_a_browser(
    live_server: LiveServer, smtp_sink: SmtpSink, session: Session
) -> None:
    lists(session)
    with httpx.Client(base_url=live_server.url, timeout=10) as browser:
        form = browser.get("/subscribe").text
        assert 'name="website"' in form and 'value="clinic-news"' in form

        answer = browser.post(
            "/subscribe",
            data={
                "email": "Reader@Example.ORG",
                "name": "Reader",
                "list": ["clinic-news", "events"],
            },
        )
        assert answer.status_code == 200 and "check your inbox" in answer.text

        [mail] = wait_for_mail(smtp_sink, 1)
        assert mail.recipient == "reader@example.org"  # one canonical spelling (M2)
        # One link confirms both lists asked for.
        [link] = confirm_links(mail)
        assert link.startswith(live_server.url)
        confirmed = browser.get(link)
        assert confirmed.status_code == 200 and "Subscription confirmed" in confirmed.text
        assert "Clinic news and Events" in confirmed.text
        for slug in ("clinic-news", "events"):
            sub = subscription(session, "reader@example.org", slug)
            assert sub.status is SubscriptionStatus.confirmed and sub.confirmed_at is not None

        preferences_url = re.search(r'href="([^"]+/preferences/[^"]+)"', confirmed.text)
        assert preferences_url
        page = browser.get(preferences_url.group(1)).text
        saved = browser.post(
            preferences_url.group(1),
            data={
                "csrf": hidden(page, "csrf"),
                "name": "Reader Two",
                "timezone": "Europe/Berlin",
                "list": ["clinic-news"],  # "events" unticked
            },
        )
        assert saved.status_code == 200 and "saved" in saved.text
        session.expire_all()
        reader = session.query(Subscriber).filter_by(email="reader@example.org").one()
        assert (reader.name, reader.timezone) == ("Reader Two", "Europe/Berlin")
        assert (
            subscription(session, reader.email, "events").status is SubscriptionStatus.unsubscribed
        )

        # The page links a one-click unsubscribe for the list still subscribed.
        unsubscribe_url = re.search(r'href="([^"]+/unsubscribe/[^"]+)"', saved.text)
        assert unsubscribe_url
        one_click = browser.post(
            unsubscribe_url.group(1), content="List-Unsubscribe=One-Click", headers=FORM
        )
        assert one_click.status_code == 200
        assert (
            subscription(session, reader.email, "clinic-news").status
            is SubscriptionStatus.unsubscribed
        )
    assert smtp_sink.handler.count() == 1


# --- no enumeration, suppression, honeypot, validation ------------------------------


def test_every_address_gets_the_same_answer_and_only_new_and_pending_get_mail(
    client: TestClient, session: Session, smtp_sink: SmtpSink
) -> None:
    news = make_list(session)
    add_member(session, news, "pending@example.org", status=SubscriptionStatus.unconfirmed)
    add_member(session, news, "confirmed@example.org")
    add_member(session, news, "left@example.org", status=SubscriptionStatus.unsubscribed)
    add_member(session, news, "bounced@example.org")
    session.add(Suppression(email="bounced@example.org", reason="hard bounce"))
    session.add(Suppression(email_hash=email_hash("forgotten@example.org"), reason="forgotten"))
    session.commit()
    addresses = ["new", "pending", "confirmed", "left", "bounced", "forgotten"]

    for body_kind in ("form", "json"):
        answers = set()
        for who in addresses:
            fields = {"email": f"{who}@example.org", "list": "clinic-news"}
            if body_kind == "form":
                response = client.post("/subscribe", data=fields)
            else:
                response = client.post("/subscribe", json=fields)
            answers.add((response.status_code, response.text))
        assert len(answers) == 1 and next(iter(answers))[0] == 200

    # Each of the two rounds mailed the new and the pending address (a fresh link).
    settle(client)
    assert sorted(smtp_sink.handler.recipients()) == sorted(
        ["new@example.org", "pending@example.org"] * 2
    )
    assert session.query(Subscriber).filter_by(email="forgotten@example.org").count() == 0
    left = subscription(session, "left@example.org", "clinic-news")
    assert left.status is SubscriptionStatus.unsubscribed


def test_a_filled_honeypot_looks_accepted_but_does_nothing(
    client: TestClient, session: Session, smtp_sink: SmtpSink
) -> None:
    lists(session)
    human = client.post("/subscribe", data={"email": "a@example.org", "list": "events"})
    bot = client.post(
        "/subscribe",
        data={"email": "b@example.org", "list": "events", "website": "http://spam.example"},
    )
    assert (bot.status_code, bot.text) == (human.status_code, human.text)
    settle(client)
    assert smtp_sink.handler.recipients() == ["a@example.org"]
    assert session.query(Subscriber).filter_by(email="b@example.org").count() == 0


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"email": "not-an-address", "list": "events"}, "email", "not a valid email"),
        ({"email": "two@@example.org", "list": "events"}, "email", "more than one"),
        ({"email": "ok@example.org", "list": "no-such-list"}, "list", "no-such-list"),
        ({"email": "ok@example.org"}, "list", "choose at least one list"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(
    client: TestClient,
    session: Session,
    smtp_sink: SmtpSink,
    fields: dict[str, str],
    field: str,
    words: str,
) -> None:
    lists(session)
    page = client.post("/subscribe", data=fields)
    assert page.status_code == 400
    assert words in page.text and f"Check {field}:" in page.text
    as_json = client.post("/subscribe", json=fields)
    assert as_json.status_code == 400
    assert as_json.json()["field"] == field and words in as_json.json()["reason"]
    settle(client)
    assert smtp_sink.handler.count() == 0
    assert session.query(Subscriber).count() == 0


def test_a_body_that_is_neither_form_nor_json_is_refused(client: TestClient) -> None:
    text = client.post(
        "/subscribe", content="email=a@b.org", headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415
    broken = client.post("/subscribe", content="{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["field"] == "body"
    wrong = client.post("/subscribe", json={"email": 5, "list": "events"})
    assert wrong.status_code == 400 and wrong.json()["field"] == "email"
    wrong = client.post("/subscribe", json={"email": "a@b.org", "list": [1]})
    assert wrong.status_code == 400 and wrong.json()["field"] == "list"


def test_the_confirmation_email_carries_none_of_the_requesters_text(
    client: TestClient, session: Session, smtp_sink: SmtpSink
) -> None:
    lists(session)
    name = "Win a prize at evil.example"
    assert (
        client.post(
            "/subscribe", data={"email": "victim@example.org", "name": name, "list": "events"}
        ).status_code
        == 200
    )
    settle(client)
    [mail] = smtp_sink.handler.received
    everything = bodies(mail)
    assert "victim@example.org" in everything and "Events" in everything
    for text in ("evil.example", "prize", "Win a"):
        assert text not in everything and text.encode() not in mail.data
    assert mail.message["To"] == "victim@example.org"
    assert "List-Unsubscribe" not in mail.message


def test_with_a_pool_of_relays_a_confirmation_goes_through_another_when_one_is_down(
    database_url: str, session: Session, smtp_sink: SmtpSink
) -> None:
    down = f"smtp://127.0.0.1:{free_port()}?weight=3"  # the heaviest; nobody listens there
    pooled = settings_for(database_url, mail_url=f"{down}, {smtp_sink.url}")
    lists(session)
    with client_for(pooled) as client:
        client.post("/subscribe", data={"email": "new@example.org", "list": "events"})
        settle(client)
    [mail] = smtp_sink.handler.received
    assert mail.recipient == "new@example.org" and confirm_links(mail)


def test_an_existing_subscribers_name_is_not_changed_by_the_form(
    client: TestClient, session: Session
) -> None:
    news = make_list(session)
    add_member(session, news, "reader@example.org", "Reader")
    session.commit()
    client.post(
        "/subscribe", data={"email": "reader@example.org", "name": "Spam", "list": news.slug}
    )
    session.expire_all()
    assert session.query(Subscriber).filter_by(email="reader@example.org").one().name == "Reader"


def test_a_single_opt_in_list_confirms_at_once_without_mail(
    client: TestClient, session: Session, smtp_sink: SmtpSink
) -> None:
    news = make_list(session)
    news.opt_in = OptIn.single
    session.commit()
    client.post("/subscribe", json={"email": "quick@example.org", "list": ["clinic-news"]})
    assert (
        subscription(session, "quick@example.org", "clinic-news").status
        is SubscriptionStatus.confirmed
    )
    settle(client)
    assert smtp_sink.handler.count() == 0


# --- confirmation links -------------------------------------------------------------


def pending(session: Session) -> tuple[int, int]:
    news = make_list(session)
    reader = add_member(session, news, "reader@example.org", status=SubscriptionStatus.unconfirmed)
    session.commit()
    return reader.id, news.id


def test_confirming_twice_is_harmless(
    client: TestClient, session: Session, settings: Settings
) -> None:
    reader_id, list_id = pending(session)
    token = TokenSigner(settings.secret_key).sign(Purpose.confirm, reader_id, list_id, 3600)
    first = client.get(f"/confirm/{token}")
    confirmed_at = subscription(session, "reader@example.org", "clinic-news").confirmed_at
    second = client.get(f"/confirm/{token}")
    assert first.status_code == second.status_code == 200
    assert "Subscription confirmed" in second.text
    sub = subscription(session, "reader@example.org", "clinic-news")
    assert sub.status is SubscriptionStatus.confirmed and sub.confirmed_at == confirmed_at


def test_a_confirmation_link_never_undoes_an_unsubscribe(
    client: TestClient, session: Session, settings: Settings
) -> None:
    news = make_list(session)
    reader = add_member(session, news, "reader@example.org", status=SubscriptionStatus.unsubscribed)
    session.commit()
    token = TokenSigner(settings.secret_key).sign(Purpose.confirm, reader.id, news.id, 3600)
    assert "Not subscribed" in client.get(f"/confirm/{token}").text
    assert subscription(session, reader.email, news.slug).status is SubscriptionStatus.unsubscribed


def test_a_forged_expired_or_misused_confirmation_link_changes_nothing(
    client: TestClient, session: Session, settings: Settings
) -> None:
    reader_id, list_id = pending(session)
    signer = TokenSigner(settings.secret_key)
    tokens = [
        TokenSigner("another-secret").sign(Purpose.confirm, reader_id, list_id, 3600),
        signer.sign(Purpose.confirm, reader_id, list_id, ttl_seconds=-60),  # expired
        signer.sign(Purpose.preferences, reader_id, list_id),
        signer.sign(Purpose.confirm, reader_id, list_id, 3600)[:-3] + "AAA",
    ]
    for token in tokens:
        response = client.get(f"/confirm/{token}")
        assert response.status_code == 400 and "This link does not work" in response.text
    assert subscription(session, "reader@example.org", "clinic-news").status is (
        SubscriptionStatus.unconfirmed
    )


# --- preferences --------------------------------------------------------------------


def preferences_token(settings: Settings, session: Session) -> tuple[str, int]:
    news = make_list(session)
    make_list(session, "events", "Events")
    reader = add_member(session, news, "reader@example.org", "Reader")
    session.commit()
    return TokenSigner(settings.secret_key).sign(Purpose.preferences, reader.id, news.id), reader.id


def test_preferences_without_a_valid_csrf_field_are_refused(
    client: TestClient, session: Session, settings: Settings
) -> None:
    token, _ = preferences_token(settings, session)
    other = TokenSigner(settings.secret_key).sign(Purpose.preferences, 999, 1)
    for csrf in (None, "", csrf_token(settings.secret_key, other), "0" * 64, "é"):
        data = {"name": "Changed", "list": ["events"]}
        if csrf is not None:
            data["csrf"] = csrf
        assert client.post(f"/preferences/{token}", data=data).status_code == 403
    session.expire_all()
    assert session.query(Subscriber).one().name == "Reader"
    assert subscription(session, "reader@example.org", "clinic-news").status is (
        SubscriptionStatus.confirmed
    )


def test_preferences_join_a_list_at_once_and_reject_an_unknown_time_zone(
    client: TestClient, session: Session, settings: Settings
) -> None:
    token, _ = preferences_token(settings, session)
    csrf = csrf_token(settings.secret_key, token)
    bad = client.post(
        f"/preferences/{token}",
        data={"csrf": csrf, "name": "X", "timezone": "Mars/Olympus_Mons", "list": ["events"]},
    )
    assert bad.status_code == 400 and "Check timezone:" in bad.text
    session.expire_all()
    assert session.query(Subscription).count() == 1  # nothing joined
    good = client.post(
        f"/preferences/{token}",
        data={"csrf": csrf, "name": "X", "timezone": "", "list": ["clinic-news", "events"]},
    )
    assert good.status_code == 200
    assert subscription(session, "reader@example.org", "events").status is (
        SubscriptionStatus.confirmed
    )


def test_a_forged_preferences_link_is_a_400(
    client: TestClient, session: Session, settings: Settings
) -> None:
    _, reader_id = preferences_token(settings, session)
    forged = TokenSigner("another-secret").sign(Purpose.preferences, reader_id, 1)
    expired = TokenSigner(settings.secret_key).sign(Purpose.preferences, reader_id, 1, -60)
    for token in (forged, expired):
        assert client.get(f"/preferences/{token}").status_code == 400
        data = {"csrf": csrf_token(settings.secret_key, token), "name": "Changed"}
        assert client.post(f"/preferences/{token}", data=data).status_code == 400
    session.expire_all()
    assert session.query(Subscriber).one().name == "Reader"


def test_preferences_pause_and_resume_only_the_readers_own_sequences(
    client: TestClient, session: Session, settings: Settings
) -> None:
    import_sample(session)
    token, reader_id = preferences_token(settings, session)
    news = session.query(Subscription).one().mailing_list
    add_member(session, news, "someone@example.org")
    sequence = create_sequence(
        session, series_slug="understanding-treatment", list_slug=news.slug, every="7d"
    )
    sync_enrollments(session, sequence, utcnow())
    session.commit()
    mine = session.query(Enrollment).filter_by(subscriber_id=reader_id).one()
    theirs = session.query(Enrollment).filter(Enrollment.subscriber_id != reader_id).one()
    page = client.get(f"/preferences/{token}").text
    assert f'name="paused" value="{mine.id}"' in page and f'value="{theirs.id}"' not in page

    csrf = csrf_token(settings.secret_key, token)
    form = {"csrf": csrf, "name": "Reader", "list": [news.slug]}
    client.post(f"/preferences/{token}", data={**form, "paused": [str(mine.id), str(theirs.id)]})
    session.expire_all()
    assert session.get(Enrollment, mine.id).status is EnrollmentStatus.paused  # type: ignore[union-attr]
    assert session.get(Enrollment, theirs.id).status is EnrollmentStatus.active  # type: ignore[union-attr]
    client.post(f"/preferences/{token}", data=form)
    session.expire_all()
    assert session.get(Enrollment, mine.id).status is EnrollmentStatus.active  # type: ignore[union-attr]


# --- rate limits --------------------------------------------------------------------


def test_too_many_signups_from_one_ip_get_429_and_send_nothing(
    settings: Settings, session: Session, smtp_sink: SmtpSink
) -> None:
    lists(session)
    policy = SignupPolicy(Limit("ip", 2, 600), Limit("address", 10, 86400), 3600)
    with client_for(settings, policy) as client:
        answers = [
            client.post("/subscribe", data={"email": f"r{i}@example.org", "list": "events"})
            for i in range(3)
        ]
        as_json = client.post("/subscribe", json={"email": "r9@example.org", "list": "events"})
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 0 < int(answers[2].headers["retry-after"]) <= 600
    assert as_json.status_code == 429 and "retry-after" in as_json.headers
    assert sorted(smtp_sink.handler.recipients()) == ["r0@example.org", "r1@example.org"]


def test_too_many_signups_for_one_address_get_429_and_send_nothing(
    settings: Settings, session: Session, smtp_sink: SmtpSink
) -> None:
    lists(session)
    policy = SignupPolicy(Limit("ip", 100, 600), Limit("address", 2, 86400), 3600)
    with client_for(settings, policy) as client:
        answers = [
            client.post("/subscribe", data={"email": email, "list": "events"})
            for email in ("same@example.org", "same@EXAMPLE.org", "same@example.org")
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 86000 < int(answers[2].headers["retry-after"]) <= 86400
    assert smtp_sink.handler.recipients() == ["same@example.org"] * 2


def test_signups_are_refused_while_the_limits_store_is_down(
    settings: Settings, session: Session, smtp_sink: SmtpSink
) -> None:
    lists(session)
    down = RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with client_for(settings, GENEROUS, down) as client:
        response = client.post("/subscribe", data={"email": "a@example.org", "list": "events"})
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert smtp_sink.handler.count() == 0


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest, redis_client: redis.Redis) -> Iterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    prefix = f"test-{uuid.uuid4().hex}"
    yield RedisRateLimiter.from_url(f"{REDIS_URL}/0", prefix)
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


def test_a_limiter_allows_count_hits_per_window_then_says_when_to_retry(
    limiter: RateLimiter,
) -> None:
    limit = Limit("test", 3, 60)
    assert all(limiter.hit(limit, "k").allowed for _ in range(3))
    refused = limiter.hit(limit, "k")
    assert not refused.allowed and 0 < refused.retry_after <= 60
    assert limiter.hit(limit, "other key").allowed
    assert limiter.hit(Limit("other limit", 3, 60), "k").allowed


def test_refused_hits_do_not_push_the_window_further(limiter: RateLimiter) -> None:
    limit = Limit("test", 1, 600)
    assert limiter.hit(limit, "k").allowed
    first = limiter.hit(limit, "k")
    for _ in range(20):
        later = limiter.hit(limit, "k")
        assert not later.allowed and later.retry_after <= first.retry_after


def test_redis_limits_are_shared_between_limiters_and_keep_no_address_in_clear(
    redis_client: redis.Redis,
) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    one = RedisRateLimiter.from_url(f"{REDIS_URL}/0", prefix)
    two = RedisRateLimiter.from_url(f"{REDIS_URL}/0", prefix)
    limit = Limit("shared", 2, 60)
    assert one.hit(limit, "reader@example.org").allowed
    assert two.hit(limit, "reader@example.org").allowed
    assert not one.hit(limit, "reader@example.org").allowed
    keys = [k.decode() for k in redis_client.scan_iter(f"{prefix}*")]
    assert len(keys) == 1 and "example.org" not in keys[0]
    assert 0 < int(redis_client.pttl(keys[0])) <= 60_000
    redis_client.delete(*keys)


def test_a_signup_over_the_redis_limit_is_refused(
    settings: Settings, session: Session, smtp_sink: SmtpSink, redis_client: redis.Redis
) -> None:
    lists(session)
    prefix = f"test-{uuid.uuid4().hex}"
    policy = SignupPolicy(Limit("ip", 1, 600), Limit("address", 10, 86400), 3600)
    limiter = RedisRateLimiter.from_url(f"{REDIS_URL}/0", prefix)
    with client_for(settings, policy, limiter) as client:
        first = client.post("/subscribe", data={"email": "a@example.org", "list": "events"})
        second = client.post("/subscribe", data={"email": "b@example.org", "list": "events"})
    assert (first.status_code, second.status_code) == (200, 429)
    assert smtp_sink.handler.recipients() == ["a@example.org"]
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


def test_the_limiter_is_redis_only_when_a_url_is_given() -> None:
    assert isinstance(make_rate_limiter(""), MemoryRateLimiter)
    assert isinstance(make_rate_limiter(REDIS_URL), RedisRateLimiter)
    with pytest.raises(RateLimiterUnavailableError):
        RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0").hit(Limit("x", 1, 1), "k")

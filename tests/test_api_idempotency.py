"""Idempotency-Key on the staff API: a POST repeated with its key does its work once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from newsletter.campaigns.models import Campaign
from newsletter.cli.processes import build_app
from newsletter.db import make_engine, make_sessionmaker
from tests.api_server import ServerThread, Staff
from tests.factories import import_sample, make_list, settings_for
from tests.smtp_sink import SmtpSink

DIGEST = {
    "name": "Digest",
    "lists": ["clinic-news"],
    "subject": "News",
    "content": {"series": "understanding-treatment"},
}


@pytest.fixture
def staff(pg_url: str, smtp_sink: SmtpSink) -> Iterator[Staff]:
    settings = settings_for(pg_url, mail_url=smtp_sink.url)
    engine = make_engine(pg_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        make_list(session)
        session.commit()
    engine.dispose()
    with ServerThread(build_app(settings)) as server:
        yield Staff(server.url, settings)


def campaigns(staff: Staff) -> int:
    with staff.session() as session:
        return session.scalar(select(func.count(Campaign.id))) or 0


def test_the_same_post_twice_creates_one_campaign(staff: Staff) -> None:
    with staff.client(staff.token("ann@clinic.example"), **{"Idempotency-Key": "k-1"}) as http:
        first = http.post("/campaigns", json=DIGEST)
        second = http.post("/campaigns", json=DIGEST)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert campaigns(staff) == 1


def test_the_same_test_send_twice_sends_one_message(staff: Staff, smtp_sink: SmtpSink) -> None:
    with staff.client(staff.token("ann@clinic.example")) as http:
        campaign = http.post("/campaigns", json=DIGEST).json()["id"]
        for _ in range(2):
            sent = http.post(
                f"/campaigns/{campaign}/test",
                json={"to": "me@clinic.example"},
                headers={"Idempotency-Key": "test-send-1"},
            )
            assert sent.status_code == 200
    assert smtp_sink.handler.recipients() == ["me@clinic.example"]


def test_another_body_with_the_same_key_is_422(staff: Staff) -> None:
    with staff.client(staff.token("ann@clinic.example"), **{"Idempotency-Key": "k-2"}) as http:
        assert http.post("/campaigns", json=DIGEST).status_code == 201
        other = http.post("/campaigns", json={**DIGEST, "name": "Another"})
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    assert campaigns(staff) == 1


def test_keys_belong_to_their_token(staff: Staff) -> None:
    for email in ("ann@clinic.example", "bob@clinic.example"):
        with staff.client(staff.token(email), **{"Idempotency-Key": "shared"}) as http:
            assert http.post("/campaigns", json=DIGEST).status_code == 201
    assert campaigns(staff) == 2


def test_a_failed_request_gives_its_key_back(staff: Staff) -> None:
    with staff.client(staff.token("ann@clinic.example"), **{"Idempotency-Key": "k-3"}) as http:
        refused = http.post("/campaigns", json={**DIGEST, "lists": ["nope"]})
        assert refused.status_code == 404
        assert http.post("/campaigns", json={**DIGEST, "lists": ["nope"]}).status_code == 404
    assert campaigns(staff) == 0


def test_concurrent_requests_with_one_key_do_not_both_run(staff: Staff) -> None:
    token = staff.token("ann@clinic.example")
    barrier = threading.Barrier(6)
    statuses: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        with staff.client(token, **{"Idempotency-Key": "race"}) as http:
            barrier.wait()
            status = http.post("/campaigns", json=DIGEST).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert campaigns(staff) == 1
    assert set(statuses) <= {201, 409}
    assert 201 in statuses


def test_a_feed_on_this_machines_network_is_refused(staff: Staff) -> None:
    with staff.client(staff.token("ann@clinic.example")) as http:
        refused = http.post("/articles/feed", json={"url": "http://127.0.0.1:9/feed.xml"})
    assert refused.status_code == 422
    assert "not a public address" in refused.json()["detail"]

"""Rate limits shared by all workers through a real Redis, and the pause after a 421."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import select

from newsletter.db import make_engine, make_sessionmaker
from newsletter.delivery.mailers import make_mailer
from newsletter.delivery.sending import ChunkSender
from newsletter.delivery.throttle import RedisThrottle, make_throttle
from newsletter.runs.models import Delivery, DeliveryStatus
from tests.factories import (
    add_member,
    import_sample,
    make_list,
    series_digest,
    settings_for,
    start_run,
)
from tests.processes import RedisServer
from tests.smtp_sink import SmtpSink


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    return client


def calls_within(throttle: RedisThrottle, domain: str, seconds: float, out: Counter[str]) -> None:
    deadline = time.monotonic() + seconds
    while True:
        throttle.wait_turn(domain)
        if time.monotonic() >= deadline:
            return
        out[domain] += 1


def run_threads(*targets: tuple[RedisThrottle, str], seconds: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    threads = [
        threading.Thread(target=calls_within, args=(throttle, domain, seconds, counts))
        for throttle, domain in targets
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def test_two_workers_share_one_global_ceiling(client: redis.Redis, redis_url: str) -> None:
    # Two workers, each with its own connection, as on two machines.
    first = RedisThrottle(redis.Redis.from_url(redis_url), 100.0, {})
    second = RedisThrottle(redis.Redis.from_url(redis_url), 100.0, {})
    counts = run_threads((first, "a.example"), (second, "b.example"), seconds=1.0)
    total = counts["a.example"] + counts["b.example"]
    # A full bucket (one second's worth) plus one second of refill, plus the tokens
    # each worker may hold (two of 100 × 20 ms): never more, and not starved either.
    assert 150 <= total <= 100 + 100 + 2 * 2
    assert counts["a.example"] > 40 and counts["b.example"] > 40


def test_a_domain_ceiling_slows_only_that_domain(client: redis.Redis, redis_url: str) -> None:
    throttle = RedisThrottle(redis.Redis.from_url(redis_url), 0.0, {"slow.example": 20.0})
    other = RedisThrottle(redis.Redis.from_url(redis_url), 0.0, {"slow.example": 20.0})
    counts = run_threads((throttle, "slow.example"), (other, "fast.example"), seconds=0.5)
    assert 10 <= counts["slow.example"] <= 20 + 10 + 1
    assert counts["fast.example"] > 500


def test_a_421_pauses_that_domain_for_every_worker_and_defers_its_mail(
    database_url: str, client: redis.Redis, redis_url: str, smtp_sink: SmtpSink
) -> None:
    tried: Counter[str] = Counter()

    def busy_relay(address: str) -> str | None:
        tried[address.rpartition("@")[2]] += 1
        return "421 4.7.0 Too many connections, slow down" if "@busy." in address else None

    smtp_sink.handler.rcpt_reply = busy_relay
    settings = settings_for(
        database_url, mail_url=smtp_sink.url, domain_backoff_seconds=300, chunk_size=100
    )
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(6):
            add_member(session, news, f"reader{i}@busy.example")
            add_member(session, news, f"reader{i}@example.org")
        _, chunks = start_run(session, series_digest(session, ["clinic-news"]))
    sender = ChunkSender(
        settings, make_mailer(settings.mail_target), make_throttle(redis_url, 0, {})
    )
    with sessions() as session:
        counts = sender.send_chunk(session, chunks[0], "task-1")
        sender.close(engine)
        rows = session.execute(
            select(Delivery.email, Delivery.status, Delivery.next_attempt_at)
        ).all()

    assert counts == {"sent": 6, "deferred": 6, "failed": 0, "suppressed": 0}
    assert sorted(smtp_sink.handler.recipients()) == [f"reader{i}@example.org" for i in range(6)]
    # The first 421 paused the domain: the other five were deferred without a try.
    assert tried["busy.example"] == 1
    # The one tried waits for the usual retry (60 s); the rest for the pause (300 s).
    waits = sorted(
        r.next_attempt_at.timestamp() - time.time()
        for r in rows
        if r.status is DeliveryStatus.deferred
    )
    assert 50 < waits[0] <= 60 and all(250 < w <= 300 for w in waits[1:])
    assert {r.status for r in rows if "@busy." in r.email} == {DeliveryStatus.deferred}
    # Another worker, elsewhere, sees the pause too.
    elsewhere = RedisThrottle(redis.Redis.from_url(redis_url), 0.0, {})
    assert 250 < elsewhere.paused_for("busy.example") <= 300
    assert elsewhere.paused_for("example.org") == 0
    engine.dispose()

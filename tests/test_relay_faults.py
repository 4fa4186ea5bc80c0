"""Relays that say "fewer, please", drop connections, or are down, against real Celery
workers with many connections each, Redis, PostgreSQL and aiosmtpd relays: nobody is
missing, nobody marked failed, nobody sent twice (but for kill -9, at most one message
per open connection)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from aiosmtpd.smtp import SMTP, Envelope, Session

from newsletter.config import Settings
from newsletter.delivery.relays import read_relay_summaries
from newsletter.runs.models import DeliveryStatus
from tests.factories import settings_for
from tests.processes import RedisServer, WorkerProcess
from tests.smtp_sink import SinkHandler, SmtpSink, free_port
from tests.test_delivery_engine import (
    assert_everyone_once_but_duplicates,
    counts,
    drive,
    finished,
    start_campaign,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def far_settings(pg_url: str, redis_server: RedisServer, mail_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "mail_url": mail_url,
        "broker_url": redis_server.url,
        "chunk_size": 100,
        "lease_seconds": 5,
        "stall_seconds": 5,
        "retry_base_seconds": 1,
        "smtp_rest_seconds": 5,
    }
    values.update(extra)
    return settings_for(pg_url, **values)


def run_to_the_end(settings: Settings, readers: int, processes: int = 2) -> int:
    campaign_id = start_campaign(settings, readers)
    worker = WorkerProcess(settings, concurrency=processes).start()
    try:
        drive(finished(campaign_id), timeout=240)
    finally:
        worker.stop()
    return campaign_id


def test_a_relay_taking_only_n_connections_sees_no_more_and_nobody_is_lost(
    pg_url: str, redis_server: RedisServer
) -> None:
    # Two worker processes with eight connections each meet a relay that takes three
    # and answers 421 to the next: they back off, and the refused messages go again.
    with SmtpSink(cap=3) as relay:
        relay.handler.delay = 0.002
        settings = far_settings(pg_url, redis_server, relay.url, smtp_connections=8)
        campaign_id = run_to_the_end(settings, 1500)
        assert relay.tally.most <= 3
        assert relay.tally.refused > 0  # it did say "fewer, please"
        assert_everyone_once_but_duplicates(relay, 1500, allowed_duplicates=0)
    assert counts(campaign_id) == {DeliveryStatus.sent: 1500}


def test_a_connection_cap_in_the_mail_url_is_never_exceeded(
    pg_url: str, redis_server: RedisServer
) -> None:
    with SmtpSink(cap=3) as relay:
        relay.handler.delay = 0.005  # far enough for every connection to be worth opening
        url = f"{relay.url}?connections=3"
        settings = far_settings(pg_url, redis_server, url, smtp_connections=25)
        campaign_id = run_to_the_end(settings, 600, processes=1)
        assert relay.tally.most == 3
        assert relay.tally.refused == 0
        assert_everyone_once_but_duplicates(relay, 600, allowed_duplicates=0)
    assert counts(campaign_id) == {DeliveryStatus.sent: 600}


class DroppingHandler(SinkHandler):
    """Every other session is cut in the middle of its second message's DATA (after
    the message, before the reply); the others are healthy."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[int, int] = {}
        self.session_lock = threading.Lock()
        self.dropped = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.session_lock:
            number, seen = self.sessions.get(id(session), (len(self.sessions), 0))
            self.sessions[id(session)] = (number, seen + 1)
            doomed = number % 2 == 1 and seen + 1 == 2
            self.dropped += doomed
        if doomed:
            assert server.transport is not None
            server.transport.close()
            return "421 dropped"
        return await super().handle_DATA(server, session, envelope)


def test_connections_dropped_mid_data_lose_nobody(pg_url: str, redis_server: RedisServer) -> None:
    with SmtpSink(DroppingHandler()) as relay:
        relay.handler.delay = 0.002  # far enough for all ten connections
        settings = far_settings(pg_url, redis_server, relay.url, smtp_connections=10)
        campaign_id = run_to_the_end(settings, 1000)
        handler = relay.handler
        assert isinstance(handler, DroppingHandler)
        assert handler.dropped >= 5
        assert_everyone_once_but_duplicates(relay, 1000, allowed_duplicates=0)
    assert counts(campaign_id) == {DeliveryStatus.sent: 1000}


def test_a_pool_with_one_relay_refusing_finishes_on_the_other(
    pg_url: str, redis_server: RedisServer
) -> None:
    down = f"smtp://127.0.0.1:{free_port()}?weight=3"  # nobody listens there
    with SmtpSink() as relay:
        settings = far_settings(pg_url, redis_server, f"{down}, {relay.url}")
        campaign_id = run_to_the_end(settings, 800)
        assert_everyone_once_but_duplicates(relay, 800, allowed_duplicates=0)
        client = redis.Redis.from_url(redis_server.url)
        seen = {r.name: r for r in read_relay_summaries(client, max_age=600)}
    assert counts(campaign_id) == {DeliveryStatus.sent: 800}
    [refusing] = [r for name, r in seen.items() if name != f"127.0.0.1:{relay.port}"]
    assert refusing.sent == 0 and refusing.down >= 3 and refusing.rests >= 1
    assert seen[f"127.0.0.1:{relay.port}"].sent == 800


def test_kill_9_of_a_worker_with_25_open_connections_skips_nobody(
    pg_url: str, redis_server: RedisServer
) -> None:
    readers, connections = 3000, 25
    with SmtpSink() as relay:
        relay.handler.delay = 0.05  # far enough that all 25 connections are worth using
        # As most relays do: each message's end then goes with the next one's envelope,
        # and still at most one message a connection may be unrecorded at the kill.
        relay.handler.pipelining = True
        settings = far_settings(
            pg_url, redis_server, relay.url, smtp_connections=connections, lease_seconds=2
        )
        campaign_id = start_campaign(settings, readers)
        worker = WorkerProcess(settings, concurrency=1).start()
        try:
            for threshold in (600, 1800):
                drive(lambda t=threshold: relay.handler.count() >= t)  # type: ignore[misc]
                assert relay.tally.open >= connections - 1  # all of them busy
                worker.kill_hard()
                worker.start()
            drive(finished(campaign_id), timeout=240)
        finally:
            worker.stop()
        allowed = worker.kills * connections
        assert_everyone_once_but_duplicates(relay, readers, allowed_duplicates=allowed)
    assert counts(campaign_id) == {DeliveryStatus.sent: readers}

"""Many connections per worker process, kept across chunks, against a real aiosmtpd relay
and PostgreSQL: each result still journalled once, nobody missing or sent twice."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.bench.tls import self_signed
from newsletter.campaigns.runs import claim_due_campaigns, fan_out_campaign_run
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings, SmtpTarget, parse_mail_urls
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.mailers import OutgoingMessage
from newsletter.delivery.relays import (
    REST_AFTER_DOWN,
    RelayPool,
    RelayReport,
    campaign_mailer,
    single_mailer,
)
from newsletter.delivery.sending import ChunkSender
from newsletter.errors import HardBounceError, RelayUnavailableError, TemporaryDeliveryError
from newsletter.runs.ledger import Chunk
from newsletter.runs.models import Delivery, DeliveryStatus
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.processes import RedisServer, settings_env
from tests.smtp_sink import SinkHandler, SmtpSink, free_port


def address(i: int) -> str:
    return f"reader{i:04d}@example.org"


@pytest.fixture
def pg_session(pg_url: str) -> Iterator[Session]:
    engine = make_engine(pg_url)
    with make_sessionmaker(engine)() as session:
        yield session
    engine.dispose()


def start_run(session: Session, readers: int) -> int:
    import_sample(session)
    news = make_list(session)
    for i in range(readers):
        add_member(session, news, address(i), f"Reader {i}")
    campaign = series_digest(session, ["clinic-news"])
    schedule_campaign(session, campaign.id, utcnow())
    [run_id] = claim_due_campaigns(session, utcnow())
    session.commit()
    return run_id


def send_run(session: Session, sender: ChunkSender, run_id: int, chunk_size: int) -> None:
    chunks: list[Chunk] = []
    sessions = make_sessionmaker(session.get_bind())  # type: ignore[arg-type]
    fan_out_campaign_run(sessions, run_id, chunk_size, chunks.append)
    for chunk in chunks:
        sender.send_chunk(session, chunk, f"claim-{chunk.first}")


def ledger(session: Session, run_id: int) -> dict[DeliveryStatus, int]:
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.run_id == run_id)
        .group_by(Delivery.status)
    ).all()
    return {status: n for status, n in rows}


def target(sink: SmtpSink) -> SmtpTarget:
    parsed = parse_mail_urls(sink.url)[0]
    assert isinstance(parsed, SmtpTarget)
    return parsed


def settings_with(pg_url: str, sink: SmtpSink, **overrides: object) -> Settings:
    return settings_for(pg_url, mail_url=sink.url, **overrides)


def assert_everyone_once(sink: SmtpSink, readers: int) -> None:
    received = Counter(sink.handler.recipients())
    assert set(received) == {address(i) for i in range(readers)}, "somebody was skipped"
    assert max(received.values()) == 1, "somebody got it twice"


def test_a_chunk_goes_out_over_several_connections_at_once(
    pg_url: str, pg_session: Session
) -> None:
    with SmtpSink() as sink:
        sink.handler.delay = 0.05  # a relay that takes its time: connections overlap
        settings = settings_with(pg_url, sink, smtp_connections=4)
        sender = ChunkSender(settings, campaign_mailer(settings))
        assert sender.concurrency == 4
        run_id = start_run(pg_session, 40)
        send_run(pg_session, sender, run_id, chunk_size=40)
        sender.close(pg_session.get_bind())  # type: ignore[arg-type]
        assert sink.tally.most == 4
        assert_everyone_once(sink, 40)
    assert ledger(pg_session, run_id) == {DeliveryStatus.sent: 40}


def test_connections_are_kept_open_across_chunks(pg_url: str, pg_session: Session) -> None:
    with SmtpSink() as sink:
        settings = settings_with(pg_url, sink)
        pool = RelayPool([target(sink)], connections=2)
        sender = ChunkSender(settings, pool)
        run_id = start_run(pg_session, 40)
        send_run(pg_session, sender, run_id, chunk_size=10)  # four chunks
        assert sink.tally.opened <= 2
        assert sink.tally.open == sum(s.open for s in pool.states())
        sender.close(pg_session.get_bind())  # type: ignore[arg-type]
        assert_everyone_once(sink, 40)
    assert ledger(pg_session, run_id) == {DeliveryStatus.sent: 40}


def test_a_connection_is_reopened_after_its_message_cap(pg_url: str, pg_session: Session) -> None:
    with SmtpSink() as sink:
        settings = settings_with(pg_url, sink, smtp_connections=1, smtp_messages_per_connection=5)
        sender = ChunkSender(settings, campaign_mailer(settings))
        run_id = start_run(pg_session, 23)
        send_run(pg_session, sender, run_id, chunk_size=10)
        sender.close(pg_session.get_bind())  # type: ignore[arg-type]
        assert sink.tally.opened == 5  # 5 + 5 + 5 + 5 + 3
        assert_everyone_once(sink, 23)
    assert ledger(pg_session, run_id) == {DeliveryStatus.sent: 23}


def test_starttls_sessions_are_kept_and_reused(
    pg_url: str, pg_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the test relay
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handshakes: list[str] = []

    class TlsHandler(SinkHandler):
        def handle_STARTTLS(self, server: Any, session: Any, envelope: Any) -> bool:
            handshakes.append(str(session.peer))
            return True

    with SmtpSink(TlsHandler(), tls_context=context, require_starttls=True) as sink:
        settings = settings_for(pg_url, mail_url=f"{sink.url}?starttls=true", smtp_connections=2)
        sender = ChunkSender(settings, campaign_mailer(settings))
        run_id = start_run(pg_session, 30)
        send_run(pg_session, sender, run_id, chunk_size=10)
        sender.close(pg_session.get_bind())  # type: ignore[arg-type]
        assert_everyone_once(sink, 30)
        assert sink.tally.opened <= 2
        assert 1 <= len(handshakes) <= 2  # one handshake per connection, not per message
    assert ledger(pg_session, run_id) == {DeliveryStatus.sent: 30}


MESSAGE = OutgoingMessage(
    "news@clinic.example",
    "reader@example.org",
    b"Subject: Clinic hours\r\n\r\nThe clinic opens at 8 on weekdays.\r\n",
    "<hours@clinic.example>",
)


def test_relays_share_the_messages_by_weight() -> None:
    with SmtpSink() as heavy, SmtpSink() as light:
        pool = RelayPool([replace(target(heavy), weight=3), target(light)], connections=2)
        for _ in range(40):
            pool.send(MESSAGE)
        pool.close()
        assert (heavy.handler.count(), light.handler.count()) == (30, 10)


def test_a_relay_that_is_down_rests_and_its_share_goes_to_the_other() -> None:
    down = SmtpTarget("127.0.0.1", free_port(), weight=3)  # nobody listens there
    with SmtpSink() as up:
        pool = RelayPool([down, target(up)], connections=2, rest_seconds=60)
        for _ in range(20):
            assert pool.send(MESSAGE).reply.startswith("250")
        pool.close()
        assert up.handler.count() == 20
        states = {s.name: s for s in pool.states()}
    assert states[down.name].sent == 0 and states[down.name].rests == 1
    assert states[down.name].down == REST_AFTER_DOWN
    assert states[down.name].resting_seconds > 50


def test_single_messages_go_to_the_heaviest_relay_and_to_the_next_only_if_it_is_down() -> None:
    with SmtpSink() as light, SmtpSink() as heavy:
        targets = [target(light), replace(target(heavy), weight=3)]
        mailer = single_mailer(targets)
        mailer.send(MESSAGE)
        mailer.close()
        assert (heavy.handler.count(), light.handler.count()) == (1, 0)
        down = SmtpTarget("127.0.0.1", free_port(), weight=3)  # nobody listens there
        mailer = single_mailer([down, target(light)])
        assert mailer.send(MESSAGE).reply.startswith("250")
        mailer.close()
        assert light.handler.count() == 1
    gone = single_mailer([down, SmtpTarget("127.0.0.1", free_port())])
    with pytest.raises(RelayUnavailableError, match="cannot connect"):
        gone.send(MESSAGE)


def test_a_single_message_refused_by_a_relay_is_not_tried_on_another() -> None:
    # A refusal of the message itself (a 550) is the message's own: a second relay would
    # give the reader a second copy if the first had taken it after all, or the same answer.
    refusing = SinkHandler(rcpt_reply=lambda address: "550 no such user")
    with SmtpSink(refusing) as first, SmtpSink() as second:
        mailer = single_mailer([replace(target(first), weight=2), target(second)])
        with pytest.raises(HardBounceError):
            mailer.send(MESSAGE)
        mailer.close()
        assert second.handler.count() == 0


def test_a_relay_rate_is_waited_for_under_its_own_key() -> None:
    waits: list[tuple[str, float]] = []
    with SmtpSink() as limited, SmtpSink() as free:
        pool = RelayPool(
            [replace(target(limited), rate=50), target(free)],
            connections=1,
            pace=lambda key, rate: waits.append((key, rate)),
        )
        for _ in range(10):
            pool.send(MESSAGE)
        pool.close()
        assert waits == [(f"relay:127.0.0.1:{limited.port}", 50.0)] * 5


def test_each_relay_shows_in_the_metrics() -> None:
    metrics.configure(None)
    try:
        with SmtpSink() as sink:
            pool = RelayPool([target(sink)], connections=2, report=RelayReport(None))
            for _ in range(7):
                pool.send(MESSAGE)
            pool.report_now()
            pool.close()
        text = metrics.exposition().decode()
    finally:
        metrics.configure(None)
    name = f"127.0.0.1:{sink.port}"
    assert f'newsletter_relay_messages_total{{relay="{name}",result="sent"}} 7.0' in text
    assert f'newsletter_relay_messages_total{{relay="{name}",result="busy"}} 0.0' in text
    assert f'newsletter_relay_connections{{relay="{name}",state="open"}} 1.0' in text
    # The existing names keep working.
    assert 'newsletter_smtp_reply_total{class="2xx"}' in text


def test_newsletter_status_shows_each_relay_as_the_workers_reported_it(pg_url: str) -> None:
    redis_server = RedisServer().start()
    try:
        client = redis.Redis.from_url(redis_server.url)
        report = RelayReport(client)
        with SmtpSink() as sink:
            pool = RelayPool([target(sink)], connections=3, report=report)
            for _ in range(12):
                pool.send(MESSAGE)
            pool.report_now()
            pool.close()
        settings = settings_for(pg_url, broker_url=redis_server.url, mail_url=sink.url)
        script = str(Path(sys.executable).parent / "newsletter")
        result = subprocess.run(
            [script, "status"], env=settings_env(settings), capture_output=True, text=True
        )
        data = subprocess.run(
            [script, "status", "--json"], env=settings_env(settings), capture_output=True
        )
    finally:
        redis_server.stop()
    assert result.returncode == 0, result.stderr
    name = f"127.0.0.1:{sink.port}"
    assert f"relay {name}: " in result.stdout
    assert "1 connections open (3 allowed, 1 processes), 12 sent, 0 errors" in result.stdout
    [relay] = json.loads(data.stdout)["relays"]
    assert (relay["name"], relay["sent"], relay["busy"], relay["down"]) == (name, 12, 0, 0)


def test_a_relay_whose_tls_fails_rests_and_the_message_is_deferred(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)  # a certificate the client does not trust
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with SmtpSink(tls_context=context) as sink:
        tls = replace(target(sink), starttls=True)
        pool = RelayPool([tls], connections=2, rest_seconds=60)
        with pytest.raises(RelayUnavailableError) as caught:
            pool.send(MESSAGE)
        pool.close()
        assert sink.handler.count() == 0
    # A TemporaryDeliveryError: the row is deferred, never failed.
    assert isinstance(caught.value, TemporaryDeliveryError)
    [state] = pool.states()
    assert (state.down, state.rests, state.sent) == (REST_AFTER_DOWN, 1, 0)
    assert state.resting_seconds > 50

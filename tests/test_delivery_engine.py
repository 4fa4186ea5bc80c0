"""The delivery engine against a real Celery worker, Redis and an aiosmtpd relay that
answers 4xx/5xx or drops connections on demand; fault tests kill workers and flush Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.audience.models import Suppression
from newsletter.campaigns.control import cancel_campaign, pause_campaign, resume_campaign
from newsletter.campaigns.models import Campaign, CampaignStatus
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.runs.models import Delivery, DeliveryStatus, Run
from newsletter.tasks.app import configure, runtime
from newsletter.tasks.scheduler import tick
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.processes import RedisServer, WorkerProcess, settings_env
from tests.smtp_sink import DROP, SmtpSink

pytestmark = pytest.mark.slow


def address(i: int) -> str:
    return f"reader{i:05d}@example.org"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def engine_settings(pg_url: str, redis_server: RedisServer, smtp_sink: SmtpSink) -> Settings:
    return settings_for(
        pg_url,
        mail_url=smtp_sink.url,
        broker_url=redis_server.url,
        chunk_size=50,
        lease_seconds=2,
        stall_seconds=2,
        retry_base_seconds=60,
    )


@pytest.fixture
def worker(engine_settings: Settings) -> Iterator[WorkerProcess]:
    process = WorkerProcess(engine_settings).start()
    yield process
    process.stop()


def start_campaign(settings: Settings, readers: int) -> int:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(readers):
            add_member(session, news, address(i), f"Reader {i}")
        campaign = series_digest(session, ["clinic-news"])
        schedule_campaign(session, campaign.id, utcnow())
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    configure(settings)
    return campaign_id


def counts(campaign_id: int) -> dict[DeliveryStatus, int]:
    with runtime().sessions() as session:
        return dict(
            session.execute(
                select(Delivery.status, func.count())
                .join(Run, Run.id == Delivery.run_id)
                .where(Run.campaign_id == campaign_id)
                .group_by(Delivery.status)
            ).all()
        )


def campaign_status(campaign_id: int) -> CampaignStatus:
    with runtime().sessions() as session:
        return session.get_one(Campaign, campaign_id).status


def counts_now() -> dict[str, int]:
    with runtime().sessions() as session:
        return {
            s.value: n
            for s, n in session.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            ).all()
        }


def drive(
    until: Callable[[], bool],
    timeout: float = 120,
    on_tick: Callable[[], None] = lambda: None,
) -> None:
    """Tick the scheduler (as `newsletter scheduler run` would) until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; ledger: {counts_now()}")
        tick(runtime())
        on_tick()
        time.sleep(0.1)


def finished(campaign_id: int) -> Callable[[], bool]:
    return lambda: campaign_status(campaign_id) is CampaignStatus.finished


def only_deferred_left(campaign_id: int) -> Callable[[], bool]:
    def check() -> bool:
        c = counts(campaign_id)
        return (
            c.get(DeliveryStatus.deferred, 0) > 0
            and c.get(DeliveryStatus.pending, 0) == 0
            and c.get(DeliveryStatus.sending, 0) == 0
        )

    return check


def test_a_4xx_reply_is_retried_after_backoff_and_delivered_once(
    engine_settings: Settings, worker: WorkerProcess, smtp_sink: SmtpSink
) -> None:
    refused = {address(3): 1}

    def greylist(rcpt: str) -> str | None:
        if refused.get(rcpt, 0) > 0:
            refused[rcpt] -= 1
            return "451 4.7.1 greylisted, try again later"
        return None

    smtp_sink.handler.rcpt_reply = greylist
    campaign_id = start_campaign(engine_settings, 20)
    drive(only_deferred_left(campaign_id))
    with runtime().sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.email == address(3))).one()
        assert delivery.status is DeliveryStatus.deferred and delivery.attempts == 1
        assert delivery.next_attempt_at is not None
        assert delivery.next_attempt_at - delivery.updated_at >= timedelta(seconds=59)
        retry_at = delivery.next_attempt_at
    assert address(3) not in smtp_sink.handler.recipients()
    # Time moves on to the retry: the next tick releases it from the ledger.
    drive(finished(campaign_id), on_tick=lambda: tick(runtime(), retry_at + timedelta(seconds=1)))
    assert Counter(smtp_sink.handler.recipients()) == Counter(address(i) for i in range(20))
    with runtime().sessions() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.email == address(3))).one()
        assert delivery.status is DeliveryStatus.sent and delivery.attempts == 2


def test_a_5xx_reply_fails_and_suppresses_only_those_recipients(
    engine_settings: Settings, worker: WorkerProcess, smtp_sink: SmtpSink
) -> None:
    unknown = {address(5), address(7)}
    smtp_sink.handler.rcpt_reply = lambda rcpt: (
        "550 5.1.1 no such user" if rcpt in unknown else None
    )
    campaign_id = start_campaign(engine_settings, 20)
    drive(finished(campaign_id))
    assert Counter(smtp_sink.handler.recipients()) == Counter(
        address(i) for i in range(20) if address(i) not in unknown
    )
    assert counts(campaign_id) == {DeliveryStatus.sent: 18, DeliveryStatus.failed: 2}
    with runtime().sessions() as session:
        assert set(session.scalars(select(Suppression.email))) == unknown


def test_a_connection_dropped_mid_data_is_deferred_then_delivered(
    engine_settings: Settings, worker: WorkerProcess, smtp_sink: SmtpSink
) -> None:
    drops = {address(4): 1}

    def drop_once(rcpts: list[str]) -> str | None:
        if drops.get(rcpts[0], 0) > 0:
            drops[rcpts[0]] -= 1
            return DROP
        return None

    smtp_sink.handler.data_reply = drop_once
    campaign_id = start_campaign(engine_settings, 20)
    drive(only_deferred_left(campaign_id))
    assert counts(campaign_id) == {DeliveryStatus.sent: 19, DeliveryStatus.deferred: 1}
    later = utcnow() + timedelta(hours=1)
    drive(finished(campaign_id), on_tick=lambda: tick(runtime(), later))
    assert Counter(smtp_sink.handler.recipients()) == Counter(address(i) for i in range(20))


def test_pause_stops_sending_and_resume_finishes_exactly_once(
    engine_settings: Settings, worker: WorkerProcess, smtp_sink: SmtpSink
) -> None:
    smtp_sink.handler.delay = 0.01
    campaign_id = start_campaign(engine_settings, 400)
    drive(lambda: smtp_sink.handler.count() >= 40)
    with runtime().sessions() as session:
        pause_campaign(session, campaign_id)
        session.commit()
    time.sleep(2.0)  # workers look at the run's status about once a second
    stopped_at = smtp_sink.handler.count()
    time.sleep(1.5)
    assert smtp_sink.handler.count() == stopped_at < 400
    with runtime().sessions() as session:
        resume_campaign(session, campaign_id)
        session.commit()
    drive(finished(campaign_id))
    assert Counter(smtp_sink.handler.recipients()) == Counter(address(i) for i in range(400))


def test_cancel_stops_for_good(
    engine_settings: Settings, worker: WorkerProcess, smtp_sink: SmtpSink
) -> None:
    smtp_sink.handler.delay = 0.01
    campaign_id = start_campaign(engine_settings, 400)
    drive(lambda: smtp_sink.handler.count() >= 40)
    with runtime().sessions() as session:
        cancel_campaign(session, campaign_id)
        session.commit()
    drive(lambda: DeliveryStatus.sending not in counts(campaign_id), timeout=30)
    sent = smtp_sink.handler.count()
    c = counts(campaign_id)
    assert c[DeliveryStatus.sent] == sent < 400
    assert c[DeliveryStatus.cancelled] == 400 - sent
    assert len(set(smtp_sink.handler.recipients())) == sent
    assert campaign_status(campaign_id) is CampaignStatus.cancelled


def assert_everyone_once_but_duplicates(
    sink: SmtpSink, readers: int, allowed_duplicates: int
) -> None:
    received = Counter(sink.handler.recipients())
    assert set(received) == {address(i) for i in range(readers)}, "somebody was skipped"
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= allowed_duplicates


def test_kill_9_of_the_worker_mid_run_skips_nobody(
    engine_settings: Settings, smtp_sink: SmtpSink
) -> None:
    smtp_sink.handler.delay = 0.003
    readers = 1500
    # One pool process with one connection: each kill interrupts at most one message
    # in flight (many connections: test_relay_faults.py).
    engine_settings = engine_settings.model_copy(update={"smtp_connections": 1})
    campaign_id = start_campaign(engine_settings, readers)
    worker = WorkerProcess(engine_settings, concurrency=1).start()
    try:
        for threshold in (300, 800):
            drive(lambda t=threshold: smtp_sink.handler.count() >= t)  # type: ignore[misc]
            worker.kill_hard()
            worker.start()
        drive(finished(campaign_id), timeout=180)
    finally:
        worker.stop()
    assert_everyone_once_but_duplicates(smtp_sink, readers, allowed_duplicates=worker.kills)
    assert counts(campaign_id) == {DeliveryStatus.sent: readers}


def test_flushing_redis_mid_run_skips_nobody(
    engine_settings: Settings,
    worker: WorkerProcess,
    redis_server: RedisServer,
    smtp_sink: SmtpSink,
) -> None:
    smtp_sink.handler.delay = 0.003
    readers = 1000
    campaign_id = start_campaign(engine_settings, readers)
    drive(lambda: smtp_sink.handler.count() >= 200)
    redis_server.flush()
    drive(finished(campaign_id), timeout=180)
    assert_everyone_once_but_duplicates(smtp_sink, readers, allowed_duplicates=0)


def test_two_scheduler_processes_never_start_one_run_twice(engine_settings: Settings) -> None:
    engine = make_engine(engine_settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        add_member(session, news, address(1))
        ids = []
        for _ in range(25):
            campaign = series_digest(session, ["clinic-news"])
            schedule_campaign(session, campaign.id, utcnow())
            ids.append(campaign.id)
        session.commit()
    env = settings_env(engine_settings)
    script = str(Path(sys.executable).parent / "newsletter")
    barrier = threading.Barrier(2)
    results: list[subprocess.CompletedProcess[str]] = []

    def run_scheduler() -> None:
        barrier.wait()
        for _ in range(3):
            results.append(
                subprocess.run(
                    [script, "scheduler", "tick", "--json"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )

    threads = [threading.Thread(target=run_scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    with make_sessionmaker(engine)() as session:
        runs = Counter(session.scalars(select(Run.campaign_id)))
    engine.dispose()
    assert runs == Counter(ids)

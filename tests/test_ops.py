"""Ops (issue 13): /metrics during real sends, alerts' inputs when processes stop,
failed deliveries sent again, readiness when PostgreSQL stops.

Real parts throughout: PostgreSQL, Redis, Celery workers with two processes, the
scheduler process, aiosmtpd, uvicorn, promtool (tests/test_alerts.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from newsletter import metrics
from newsletter.api.app import create_staff_app
from newsletter.campaigns.runs import claim_due_campaigns
from newsletter.campaigns.service import schedule_campaign
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker, upgrade, utcnow
from newsletter.runs.models import Delivery, Run, RunStatus
from newsletter.tasks.app import configure, runtime
from newsletter.tasks.scheduler import tick
from newsletter.web.app import create_app
from tests.api_server import ServerThread, Staff
from tests.factories import add_member, import_sample, make_list, series_digest, settings_for
from tests.processes import ROOT, PostgresServer, WorkerProcess, settings_env
from tests.smtp_sink import SinkHandler, SmtpSink

DEPLOY = ROOT / "deploy"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels, parsed by prometheus_client."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Iterator[Path]:
    """A metrics folder of this test's own, shared by the test process (which serves
    /metrics) and the workers it starts."""
    folder = tmp_path / "metrics"
    metrics.configure(folder)
    yield folder
    metrics.configure(None)


@pytest.fixture
def redis_broker_url() -> str:
    url = os.environ.get("NEWSLETTER_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/12"
    redis.Redis.from_url(url).flushdb()
    return url


def audience_and_campaign(settings: Settings, readers: int) -> int:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        for i in range(readers):
            add_member(session, news, f"reader{i}@example.org", f"Reader {i}")
        campaign = series_digest(session, ["clinic-news"])
        schedule_campaign(session, campaign.id, utcnow())
        session.commit()
        campaign_id = campaign.id
    engine.dispose()
    return campaign_id


def ledger_counts(settings: Settings) -> dict[str, int]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        rows = session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        ).all()
    engine.dispose()
    return {status.value: count for status, count in rows}


def sent_per_process(folder: Path) -> dict[str, float]:
    """newsletter_messages_total{result="sent"} in each process's own metrics file."""
    found = {}
    for path in folder.glob("counter_*.db"):
        for key, count, _, _ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            _, sample, labels, _ = json.loads(key)
            if sample == "newsletter_messages_total" and labels == {"result": "sent"}:
                found[path.name] = found.get(path.name, 0.0) + count
    return found


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\bnewsletter_[a-z0-9_]+\b", expression))


# --- must show 1: a real send, scraped ----------------------------------------------------


@pytest.mark.slow
def test_metrics_during_a_real_send_add_up_over_both_worker_processes(
    pg_url: str, redis_broker_url: str, metrics_dir: Path
) -> None:
    readers = 120
    handler = SinkHandler(delay=0.03)  # a relay that takes a moment: the run lasts seconds
    with SmtpSink(handler) as sink:
        settings = settings_for(
            pg_url,
            mail_url=sink.url,
            broker_url=redis_broker_url,
            metrics_dir=str(metrics_dir),
            chunk_size=10,
            smtp_connections=1,  # one message at a time per process: the run lasts seconds
        )
        campaign_id = audience_and_campaign(settings, readers)
        staff_app = create_staff_app(settings)
        worker = WorkerProcess(settings, concurrency=2).start()
        try:
            with ServerThread(staff_app) as server:
                staff = Staff(server.url, settings)
                token = staff.token("prometheus@clinic.example", "metrics:read", role="ops")
                with staff.client(token) as api:
                    scraped: set[str] = set()  # every sample name seen during the send

                    def scrape() -> Samples:
                        answer = api.get("/metrics")
                        assert answer.status_code == 200, answer.text
                        assert answer.headers["content-type"].startswith("text/plain")
                        samples = parse(answer.text)
                        scraped.update(name for name, _ in samples)
                        return samples

                    configure(settings)
                    seen_pending = []

                    def finished() -> bool:
                        tick(runtime())
                        samples = scrape()
                        pending = value(
                            samples, "newsletter_run_pending_recipients", campaign=str(campaign_id)
                        )
                        if pending:
                            seen_pending.append(pending)
                        return ledger_counts(settings).get("sent", 0) == readers and not total(
                            samples, "newsletter_run_pending_recipients"
                        )

                    wait_until(finished, "the run to be sent")
                    tick(runtime())
                    end = scrape()
                    per_process = sent_per_process(metrics_dir)
                    # A token for Prometheus reads metrics, nothing else.
                    assert api.get("/deliveries").status_code == 403
        finally:
            worker.stop()
            runtime().close()

    ledger = ledger_counts(settings)
    assert ledger == {"sent": readers}
    assert value(end, "newsletter_messages_total", result="sent") == ledger["sent"]
    assert value(end, "newsletter_messages_total", result="failed") == 0
    # Both worker processes sent, each in its own file; the scrape is their sum.
    senders = {name: count for name, count in per_process.items() if count}
    assert len(senders) >= 2, per_process
    assert sum(senders.values()) == readers
    assert value(end, "newsletter_smtp_reply_total", **{"class": "2xx"}) == readers
    assert value(end, "newsletter_send_duration_seconds_count") == readers
    assert value(end, "newsletter_render_duration_seconds_count") == 1
    # While it sent, the run's recipients were pending; at the end nothing is.
    assert seen_pending and max(seen_pending) > 0
    assert total(end, "newsletter_run_pending_recipients") == 0
    assert value(end, "newsletter_oldest_pending_delivery_age_seconds") == 0
    assert value(end, "newsletter_workers") == 1  # one worker (two processes) answered
    assert value(end, "newsletter_queue_length", queue="newsletter") == 0
    assert (
        utcnow().timestamp() - value(end, "newsletter_scheduler_last_tick_timestamp_seconds") < 60
    )

    # The dashboard and the alert rules name only metrics that the scrapes had.
    dashboard = json.loads((DEPLOY / "grafana" / "newsletter.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    expressions += re.findall(r"expr: \|?\s*(.+?)(?=\n\s+(?:for|labels):)", rules, re.S)
    assert len(expressions) >= 25
    for expression in expressions:
        assert metric_names(expression), expression
        missing = metric_names(expression) - scraped
        assert not missing, f"{expression}: {missing} not in the scrape"


def test_metrics_need_the_metrics_scope_and_are_not_on_the_public_app(
    sqlite_url: str, metrics_dir: Path
) -> None:
    settings = settings_for(sqlite_url, metrics_dir=str(metrics_dir))
    with ServerThread(create_staff_app(settings)) as server:
        staff = Staff(server.url, settings)
        reader = staff.token("editor@clinic.example", "campaigns:read", role="editor")
        with staff.client() as anonymous, staff.client(reader) as editor:
            assert anonymous.get("/metrics").status_code == 401
            assert editor.get("/metrics").status_code == 403
    with ServerThread(create_app(settings)) as public:
        for path in ("/metrics", "/api/v1/metrics"):
            assert httpx.get(public.url + path).status_code == 404


# --- must show 2: the scheduler and the worker stop mid-run ------------------------------


class SchedulerProcess:
    """`python scheduler.py` (the same as `newsletter scheduler run`)."""

    def __init__(self, settings: Settings) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "scheduler.py"],
            cwd=ROOT,
            env=settings_env(settings),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.mark.slow
def test_stopping_the_scheduler_and_the_worker_mid_run_ages_what_the_alerts_read(
    pg_url: str, redis_broker_url: str, metrics_dir: Path
) -> None:
    handler = SinkHandler(delay=0.1)
    with SmtpSink(handler) as sink:
        settings = settings_for(
            pg_url,
            mail_url=sink.url,
            broker_url=redis_broker_url,
            metrics_dir=str(metrics_dir),
            chunk_size=20,
            scheduler_interval=0.5,
            smtp_connections=1,  # one message at a time: the run is still going when stopped
        )
        audience_and_campaign(settings, 200)
        worker = WorkerProcess(settings, concurrency=2).start()
        scheduler = SchedulerProcess(settings)
        try:
            with ServerThread(create_staff_app(settings)) as server:
                staff = Staff(server.url, settings)
                token = staff.token("prometheus@clinic.example", "metrics:read", role="ops")
                with staff.client(token) as api:

                    def scrape() -> Samples:
                        return parse(api.get("/metrics").text)

                    def sending() -> bool:
                        counts = ledger_counts(settings)
                        return counts.get("sent", 0) >= 20 and counts.get("pending", 0) > 0

                    wait_until(sending, "the scheduler and the workers to be sending")
                    before = scrape()
                    heartbeat = "newsletter_scheduler_last_tick_timestamp_seconds"
                    assert now_minus(before, heartbeat) < 10
                    worker.kill_hard()
                    scheduler.kill()
                    first = scrape()
                    first_age = now_minus(first, heartbeat)  # the heartbeat's age then
                    wait_until(
                        lambda: (
                            value(scrape(), "newsletter_oldest_pending_delivery_age_seconds")
                            >= value(first, "newsletter_oldest_pending_delivery_age_seconds") + 2
                        ),
                        "the oldest pending delivery to age",
                        timeout=30,
                    )
                    later = scrape()
                    later_age = now_minus(later, heartbeat)
        finally:
            scheduler.kill()
            worker.stop()

    assert ledger_counts(settings).get("pending", 0) > 0  # the run is stuck, not done
    oldest = "newsletter_oldest_pending_delivery_age_seconds"
    assert value(later, oldest) >= value(first, oldest) + 2 > 2
    # No tick since the kill: the heartbeat stays put while time goes on.
    assert value(later, heartbeat) == value(first, heartbeat) > 0
    assert later_age >= first_age + 2
    assert value(later, "newsletter_workers") == 0
    assert total(later, "newsletter_run_pending_recipients") > 0


def now_minus(samples: Samples, name: str) -> float:
    return time.time() - value(samples, name)


# --- must show 3: failed deliveries sent again, once ---------------------------------------


@pytest.mark.slow
def test_retry_after_a_relay_refused_a_batch_sends_only_those_again_once(
    pg_url: str, redis_broker_url: str, metrics_dir: Path
) -> None:
    refusing = {"on": True}
    refused: list[str] = []

    def relay_policy(recipients: list[str]) -> str | None:
        # The relay refuses every message for a while (a policy problem on its side).
        if refusing["on"] and recipients and recipients[0].startswith("reader1"):
            refused.extend(recipients)
            return "554 5.7.1 relay access denied for now"
        return None

    handler = SinkHandler(data_reply=relay_policy)
    with SmtpSink(handler) as sink:
        settings = settings_for(
            pg_url, mail_url=sink.url, broker_url=redis_broker_url, metrics_dir=str(metrics_dir)
        )
        campaign_id = audience_and_campaign(settings, 30)
        worker = WorkerProcess(settings, concurrency=2).start()
        try:
            configure(settings)

            def run_over() -> bool:
                tick(runtime())
                with runtime().sessions() as session:
                    run = session.scalar(select(Run).where(Run.campaign_id == campaign_id))
                    return run is not None and run.status is RunStatus.finished

            wait_until(run_over, "the first send")
            first = rows_by_email(settings)
            failed = sorted(e for e, row in first.items() if row["status"] == "failed")
            assert failed == sorted(set(refused)) and len(failed) == 11  # reader1, reader10-19
            assert all(
                row["smtp_reply"].startswith("554") for e, row in first.items() if e in failed
            )
            delivered_once = [r.recipient for r in handler.received]
            assert len(delivered_once) == 19

            refusing["on"] = False
            [run_id] = {row["run"] for row in first.values()}
            retried = cli(settings, "deliveries", "retry", "--run", str(run_id), "--status",
                          "failed", "--reason", "relay fixed its policy", "--json")  # fmt: skip
            assert json.loads(retried)["requeued"] == 11
            wait_until(run_over, "the retried deliveries to be sent")
            # A second retry finds nothing to send.
            again = cli(settings, "deliveries", "retry", "--run", str(run_id), "--json")
            assert json.loads(again)["requeued"] == 0
            tick(runtime())
        finally:
            worker.stop()
            runtime().close()

    second = rows_by_email(settings)
    received = [r.recipient for r in handler.received]
    # The refused ones arrived once now; nobody who had it got it again.
    assert sorted(received) == sorted(f"reader{i}@example.org" for i in range(30))
    for email, row in second.items():
        assert row["status"] == "sent"
        if email not in failed:
            assert row == first[email]  # sent rows untouched: same time, id, attempts
        else:
            assert row["attempts"] == 2 and row["message_id"] != first[email]["message_id"]
    audit = json.loads(cli(settings, "audit", "--json"))
    retries = [e for e in audit if e["action"] == "deliveries.retry"]
    assert [e["detail"]["requeued"] for e in retries] == [11, 0]
    assert retries[0]["detail"]["reason"] == "relay fixed its policy"


def rows_by_email(settings: Settings) -> dict[str, dict[str, object]]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        rows = session.scalars(select(Delivery)).all()
        found = {
            row.email: {
                "run": row.run_id,
                "status": row.status.value,
                "attempts": row.attempts,
                "message_id": row.message_id,
                "sent_at": row.sent_at,
                "smtp_reply": row.smtp_reply,
            }
            for row in rows
        }
    engine.dispose()
    return found


def cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "from newsletter.cli import main; main()", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_retry_refuses_sent_rows_and_names_the_problem(database_url: str) -> None:
    settings = settings_for(database_url)
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        import_sample(session)
        news = make_list(session)
        add_member(session, news, "ann@example.org")
        campaign = series_digest(session, ["clinic-news"])
        schedule_campaign(session, campaign.id, utcnow())
        [run_id] = claim_due_campaigns(session, utcnow())
        session.commit()
    engine.dispose()
    for args, message in (
        (("--status", "sent"), "status: only failed or deferred deliveries are retried"),
        (("--run", "999"), "no run 999"),
    ):
        command = ["deliveries", "retry", "--run", str(run_id), *args]
        done = subprocess.run(
            [sys.executable, "-c", "from newsletter.cli import main; main()", *command],
            cwd=ROOT,
            env=settings_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert message in done.stderr and "Traceback" not in done.stderr


# --- must show 4: readiness -------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
    folder.chmod(0o755)  # the server runs as the postgres user
    server = PostgresServer(folder / "data").start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped by the test
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_readyz_names_a_stopped_postgresql_while_healthz_stays_200(
    private_postgres: PostgresServer,
) -> None:
    settings = settings_for(private_postgres.url)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    with ServerThread(create_app(settings)) as server, httpx.Client(base_url=server.url) as web:
        assert web.get("/readyz").status_code == 200
        private_postgres.stop()
        down = web.get("/readyz")
        alive = web.get("/healthz")

    assert down.status_code == 503
    assert down.json() == {"database": "unreachable", "migrations": "unknown", "broker": "ok"}
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


def test_readyz_names_a_schema_behind_on_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        head = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0008'")
    settings = settings_for(pg_url)
    try:
        with ServerThread(create_app(settings)) as server:
            behind = httpx.get(server.url + "/readyz")
            alive = httpx.get(server.url + "/healthz")
    finally:
        with engine.begin() as conn:  # the session's database goes back to its head
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = %s", (head,))
        engine.dispose()

    assert behind.status_code == 503
    assert behind.json()["database"] == "ok"
    assert behind.json()["migrations"] == "not at the head revision: run newsletter db upgrade"
    assert alive.status_code == 200

"""What Prometheus reads about the database and the broker, computed when it scrapes,
and the small HTTP server of `NEWSLETTER_METRICS_PORT`.

Counters live where things happen (metrics.py); the gauges here describe state that
the database and Redis hold for every process at once, so they are read at scrape
time instead of being kept by any one process:

| metric | from |
|---|---|
| newsletter_run_pending_recipients{campaign} | the ledger: rows left to send, sending runs only |
| newsletter_oldest_pending_delivery_age_seconds | the ledger: oldest row waiting (0: none) |
| newsletter_scheduler_last_tick_timestamp_seconds | scheduler heartbeats (0: never ticked) |
| newsletter_runs{status} | runs preparing, sending, paused |
| newsletter_runs_stalled | runs found without progress (`newsletter runs stalled`) |
| newsletter_run_messages{campaign,run} | recent runs: messages handed over |
| newsletter_run_bounces{campaign,run} | recent runs: refused or reported bounced |
| newsletter_queue_length{queue} | Redis LLEN of the Celery queue (and its priority lists) |
| newsletter_workers | Celery workers answering a ping |

A source that does not answer leaves its metrics out of that scrape (and is logged),
so Prometheus sees a gap rather than a made-up zero; `newsletter_collector_errors`
says which source failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from newsletter import metrics
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.runs.lifecycle import last_tick, stalled_runs
from newsletter.runs.progress import (
    oldest_pending_since,
    pending_by_origin,
    recent_run_bounces,
    runs_by_status,
)
from newsletter.tasks.app import QUEUE, app

log = logging.getLogger(__name__)

# Runs finished this long ago still show their bounces (reports come in for days).
BOUNCE_WINDOW = timedelta(hours=48)
PING_TIMEOUT = 1.0


class QueueProbe:
    """LLEN of the Celery queue over one kept Redis connection."""

    def __init__(self, broker_url: str) -> None:
        self._redis = redis.Redis.from_url(
            broker_url, socket_timeout=2, socket_connect_timeout=2, max_connections=1
        )
        self._lock = threading.Lock()

    def lengths(self) -> dict[str, int]:
        # kombu keeps a Redis list per queue, plus one per priority step (`QUEUE\x06\x163`).
        with self._lock:
            names = [QUEUE, *(f"{QUEUE}\x06\x16{n}" for n in range(1, 10))]
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.llen(name)
            return {QUEUE: sum(int(n) for n in pipe.execute())}

    def close(self) -> None:
        self._redis.close()


def ping_workers(broker_url: str, timeout: float = PING_TIMEOUT) -> int:
    """Celery workers answering a ping on `broker_url` within `timeout` (over a
    connection of its own, so it works in a process that never configured the app)."""
    with app.connection_for_write(broker_url) as connection:
        replies = app.control.ping(timeout=timeout, connection=connection) or []
    return len(replies)


@dataclass(frozen=True)
class BrokerHealth:
    """The broker's side of the ops page: tasks waiting per queue and workers alive.
    None where it cannot be read (the embedded broker lives inside one process);
    `problem` says why a source did not answer."""

    queues: dict[str, int] | None
    workers: int | None
    problem: str = ""


def broker_health(settings: Settings, queues: QueueProbe | None) -> BrokerHealth:
    """What `newsletter_queue_length` and `newsletter_workers` say, read now."""
    if settings.embedded_broker or queues is None:
        return BrokerHealth(None, None)
    lengths: dict[str, int] | None = None
    workers: int | None = None
    problems = []
    try:
        lengths = queues.lengths()
    except Exception as exc:  # the broker does not answer: say so, do not crash the page
        problems.append(f"queue: {' '.join(str(exc).split()) or type(exc).__name__}")
    try:
        workers = ping_workers(settings.broker_url)
    except Exception as exc:
        problems.append(f"workers: {' '.join(str(exc).split()) or type(exc).__name__}")
    return BrokerHealth(lengths, workers, "; ".join(problems))


class ServiceCollector(Collector):
    """The database and broker gauges, read at each scrape."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
        self.queues = QueueProbe(settings.broker_url) if self.redis_broker else None

    def close(self) -> None:
        if self.queues is not None:
            self.queues.close()

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "newsletter_collector_errors",
            "1 when a source of the scrape-time gauges did not answer this time.",
            labels=["source"],
        )
        for source, read in (
            ("database", self._database),
            ("queue", self._queue),
            ("workers", self._workers),
        ):
            try:
                yield from read()
                errors.add_metric([source], 0)
            except Exception as exc:  # a source that does not answer is a gap, not a crash
                log.warning("metrics: %s did not answer: %s", source, exc)
                errors.add_metric([source], 1)
        yield errors

    def _database(self) -> Iterator[Metric]:
        now = utcnow()
        with self.sessions() as session:
            pending = pending_by_origin(session)
            oldest = oldest_pending_since(session)
            ticked = last_tick(session)
            by_status = runs_by_status(session)
            stalled = stalled_runs(session, now, timedelta(seconds=self.settings.stall_seconds))
            bounces = recent_run_bounces(session, now - BOUNCE_WINDOW)
        family = GaugeMetricFamily(
            "newsletter_run_pending_recipients",
            "Recipients still to send (pending, sending, deferred) of sending runs.",
            labels=["campaign"],
        )
        for origin, count in sorted(pending.items()):
            family.add_metric([origin], count)
        yield family
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "newsletter_oldest_pending_delivery_age_seconds",
            "How long the oldest delivery of a sending run has waited to be sent (0: none).",
            value=age,
        )
        yield GaugeMetricFamily(
            "newsletter_scheduler_last_tick_timestamp_seconds",
            "When a scheduler last finished a tick, Unix time (0: never).",
            value=ticked.timestamp() if ticked is not None else 0.0,
        )
        runs = GaugeMetricFamily(
            "newsletter_runs", "Runs that may still send, by status.", labels=["status"]
        )
        for status, count in by_status.items():
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(
            "newsletter_runs_stalled",
            "Runs without progress (see `newsletter runs stalled`).",
            value=len(stalled),
        )
        handed = GaugeMetricFamily(
            "newsletter_run_messages",
            "Messages of a recent run handed over (sent or refused).",
            labels=["campaign", "run"],
        )
        bounced = GaugeMetricFamily(
            "newsletter_run_bounces",
            "Messages of a recent run refused permanently or reported bounced since.",
            labels=["campaign", "run"],
        )
        for one in bounces:
            handed.add_metric([one.origin, str(one.run)], one.handed_over)
            bounced.add_metric([one.origin, str(one.run)], one.bounced)
        yield handed
        yield bounced

    def _queue(self) -> Iterator[Metric]:
        if self.queues is None:
            return  # the embedded broker lives inside one process: no queue to read
        family = GaugeMetricFamily(
            "newsletter_queue_length", "Tasks waiting in each Celery queue.", labels=["queue"]
        )
        for queue, length in self.queues.lengths().items():
            family.add_metric([queue], length)
        yield family

    def _workers(self) -> Iterator[Metric]:
        if self.settings.embedded_broker:
            return  # workers run inside the process that sends
        yield GaugeMetricFamily(
            "newsletter_workers",
            "Celery workers that answered a ping.",
            value=ping_workers(self.settings.broker_url),
        )


def start_metrics_server(
    port: int, host: str = "0.0.0.0", collector: Collector | None = None
) -> ThreadingHTTPServer:
    """Serve GET /metrics on `port` in a daemon thread: what `metrics.exposition` says,
    with `collector`'s gauges when given. No login: bind it to a private network."""
    extra = [collector] if collector is not None else []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = metrics.exposition(extra)
            except Exception:
                log.exception("metrics: the exposition failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", metrics.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info("metrics on port %d (GET /metrics)", server.server_address[1])
    return server

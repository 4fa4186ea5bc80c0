"""The Celery app and the per-process runtime (settings, database, mailer).

Entry points call `configure(settings)` once; tasks reach the runtime through
`runtime()`. The engine and the mailer are created lazily in each process, so
prefork children never share a connection with their parent.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.delivery.relays import RelayReport, campaign_mailer
from newsletter.delivery.sending import ChunkSender
from newsletter.delivery.throttle import make_throttle
from newsletter.errors import BrokerUnavailableError, ConfigError
from newsletter.logs import clear_log_context, set_log_context

QUEUE = "newsletter"
log = logging.getLogger(__name__)

app = Celery("newsletter", include=["newsletter.tasks.jobs"])


class Runtime:
    """What tasks need, built from settings once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = -1
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._sender: ChunkSender | None = None
        # When this process last deleted tracking events past their retention.
        self.pruned_at: datetime | None = None

    def _ensure_process(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._engine = make_engine(self.settings.database_url)
            self._sessions = make_sessionmaker(self._engine)
            self._sender = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        self._ensure_process()
        assert self._sessions is not None
        return self._sessions

    @property
    def sender(self) -> ChunkSender:
        self._ensure_process()
        if self._sender is None:
            cfg = self.settings
            throttle = make_throttle(cfg.shared_redis_url, cfg.rate_limit, cfg.domain_limits)
            client = redis.Redis.from_url(cfg.shared_redis_url) if cfg.shared_redis_url else None
            mailer = campaign_mailer(cfg, throttle.wait_rate, RelayReport(client))
            self._sender = ChunkSender(cfg, mailer, throttle)
        return self._sender

    def owned_here(self) -> bool:
        """Whether this process opened the runtime's connections (not a forked parent's)."""
        return self._pid == os.getpid()

    def close(self) -> None:
        if self._sender is not None:
            assert self._engine is not None
            try:
                self._sender.close(self._engine)
            except Exception as exc:  # the database is gone: the journal stays, for replay
                log.warning("delivery results left in the journal: %s", exc)
            self._sender = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._pid = -1


_runtime: Runtime | None = None


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE,
        # Publish straight to the queue (the broker's default exchange), not through a
        # binding: with Redis, bindings are keys that a FLUSHALL would erase, and
        # messages routed through a missing binding are silently dropped.
        "task_routes": {"newsletter.*": {"queue": QUEUE, "exchange": "", "routing_key": QUEUE}},
        "task_ignore_result": True,
        # A task is acknowledged after it ran; if the worker dies mid-task the broker
        # hands it to another worker. Tasks are idempotent, so a repeat is harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        # `scheduler tick` with the embedded broker runs tasks inline: let their errors
        # reach the command instead of vanishing into a result nobody reads.
        "task_eager_propagates": True,
        "accept_content": ["json"],
    }
    if settings.embedded_broker:
        config["broker_transport_options"] = {"polling_interval": 0.05}
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        # A task not acknowledged within an hour is redelivered (worker killed mid-chunk).
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


def configure(settings: Settings) -> Celery:
    """Point the app at the configured broker and set this process's runtime."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
    _runtime = Runtime(settings)
    # Reconfiguring (tests, the demo) must not keep producers bound to the old broker;
    # kombu's pools are global and keyed by broker URL, so reset them too.
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    pools.reset()  # type: ignore[no-untyped-call]
    app.conf.update(celery_config(settings))
    return app


def _safe_url(url: str) -> str:
    """The broker URL with any password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _reason(exc: BaseException) -> str:
    """What went wrong, in the library's words, without its class name."""
    return " ".join(str(exc).split()) or "no answer"


def broker_problem(broker_url: str) -> str | None:
    """None when the broker answers within a few seconds, else what went wrong, in one
    line naming the broker (password masked)."""
    from kombu.connection import Connection

    try:
        with Connection(broker_url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises many kinds; any of them means "not reachable"
        return f"cannot reach the broker at {_safe_url(broker_url)}: {_reason(exc)}"
    return None


def require_broker(settings: Settings) -> None:
    """BrokerUnavailableError (one line) unless the configured broker answers."""
    if settings.embedded_broker:
        return
    problem = broker_problem(settings.broker_url)
    if problem is not None:
        raise BrokerUnavailableError(f"NEWSLETTER_BROKER_URL: {problem}")


class BrokerProbe:
    """Whether the broker answers, through one kept connection (a pool of one for
    Redis), not a new connection per question: a readiness probe asks every few
    seconds, from every web process."""

    def __init__(self, broker_url: str, timeout: float = 2.0) -> None:
        self._url = broker_url
        self._timeout = timeout
        self._lock = threading.Lock()
        self._redis: redis.Redis | None = None
        self._kombu: Any = None
        if broker_url.startswith(("redis://", "rediss://")):
            self._redis = redis.Redis.from_url(
                broker_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                max_connections=1,
            )

    def problem(self) -> str | None:
        """None when the broker answered; else what went wrong, in words."""
        try:
            if self._redis is not None:
                with self._lock:  # one connection, one question at a time
                    self._redis.ping()
            else:
                self._ping_kombu()
        except Exception as exc:  # any failure means "not reachable"
            return _reason(exc)
        return None

    def _ping_kombu(self) -> None:
        from kombu.connection import Connection

        with self._lock:
            if self._kombu is None:
                self._kombu = Connection(self._url, connect_timeout=self._timeout)  # type: ignore[no-untyped-call]
            self._kombu.ensure_connection(max_retries=1)
            self._kombu.default_channel  # noqa: B018 (opens the channel when it is gone)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._kombu is not None:
            self._kombu.release()


@task_prerun.connect  # type: ignore[untyped-decorator]
def _log_about_task(task_id: str, task: Any, args: Any = (), **_: object) -> None:
    """Records logged while a task runs carry its id, and the run and chunk it is about."""
    fields: dict[str, Any] = {"task_id": task_id}
    name = getattr(task, "name", "")
    if name in ("newsletter.send_chunk", "newsletter.prepare_run") and args:
        fields["run_id"] = args[0]
    if name == "newsletter.send_chunk" and len(args) >= 3:
        fields["chunk"] = f"{args[1]}-{args[2]}"
    set_log_context(**fields)


@task_postrun.connect  # type: ignore[untyped-decorator]
def _log_about_nothing(**_: object) -> None:
    clear_log_context()


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _close_runtime(**_: object) -> None:
    """A process that stops cleanly (a pool process, or a command that ran tasks
    inline) puts its journalled results into the ledger and removes its journal."""
    if _runtime is not None and _runtime.owned_here():
        _runtime.close()


atexit.register(_close_runtime)


def runtime() -> Runtime:
    if _runtime is None:
        raise ConfigError(
            "the Celery app is not configured: start workers with `newsletter worker`"
        )
    return _runtime


@contextmanager
def embedded_worker(concurrency: int = 1) -> Iterator[None]:
    """A real Celery worker in a thread of this process, for the in-memory broker."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        app,
        pool="solo",
        concurrency=concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=60,
    ):
        yield

"""Prometheus instruments: counted where things happen, added up over processes.

Every counter and histogram of the service is defined here, once, and counted at the
one place its event happens: a delivery result where the sender journals it, an SMTP
reply where the mailer classifies it, a bounce where it is applied. Gauges that
describe the database or Redis (pending deliveries, queue lengths, the scheduler's
heartbeat) are not kept here: a collector computes them when Prometheus scrapes
(tasks/monitoring.py).

Multiprocess mode. Celery's prefork children and several web processes each count in
their own memory-mapped file under the metrics directory (`NEWSLETTER_METRICS_DIR`);
a scrape adds the files up, so every process that shares the directory is counted
once. `configure(directory)` switches a process to it before any instrument is made
(`instruments()` makes them on first use). A counter increment then costs a lock
that no other thread holds and a store into the mapped page (no system call: see
README "Operations" for the measured cost).

Dead processes. A file whose process has died keeps its counts (so totals never go
down while the service runs), but it is folded into one `*_archive.db` file per kind
at the next scrape, and the gauges of dead processes are dropped, so the directory
does not grow with every restarted child. Folding and scraping take a lock on the
directory (`.lock`), so a scrape never sees a count twice or not at all.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import glob
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MESSAGE_RESULTS = ("sent", "deferred", "failed", "suppressed")
REPLY_CLASSES = ("2xx", "4xx", "5xx", "timeout", "dropped")
BOUNCE_KINDS = ("hard", "soft")
UNSUBSCRIBE_METHODS = ("link", "mailto", "preferences", "complaint", "other")
SIGNUP_RESULTS = ("pending", "confirmed", "unchanged", "suppressed", "invalid", "rate_limited")
IMPORT_RESULTS = ("created", "updated", "unchanged", "skipped")
WEBHOOK_RESULTS = ("delivered", "failed")

# Handing one message to a relay: a local sink answers in about 0.3 ms, a relay far
# away in tens of milliseconds, a struggling one in seconds.
SEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Rendering a run once: tens of milliseconds, seconds for templates that read readers.
RENDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_LOCK_FILE = ".lock"
_ARCHIVE = "archive"
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class Instruments:
    """The service's counters and histograms (one set per process)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.messages = counter(
            "newsletter_messages", "Delivery results recorded, by result.", ("result",)
        )
        self.smtp_replies = counter(
            "newsletter_smtp_reply",
            "SMTP replies to a message hand-over, by class (timeout and dropped: no reply).",
            ("class",),
        )
        self.send_duration = Histogram(
            "newsletter_send_duration_seconds",
            "Time to hand one message to the mailer (build excluded).",
            buckets=SEND_BUCKETS,
            registry=registry,
        )
        self.render_duration = Histogram(
            "newsletter_render_duration_seconds",
            "Time to render a run's email once (templates, CSS inlining, text part).",
            buckets=RENDER_BUCKETS,
            registry=registry,
        )
        self.bounces = counter(
            "newsletter_bounces", "Bounces applied (DSNs, provider events), by kind.", ("kind",)
        )
        self.complaints = counter("newsletter_complaints", "Spam complaints applied.")
        self.unsubscribes = counter(
            "newsletter_unsubscribes", "Readers who left a list, by how.", ("method",)
        )
        self.signups = counter(
            "newsletter_signups", "Sign-up requests of the public form, by result.", ("result",)
        )
        self.webhook_deliveries = counter(
            "newsletter_webhook_deliveries",
            "Outgoing webhook deliveries to staff endpoints, by result.",
            ("result",),
        )
        self.import_rows = counter(
            "newsletter_import_rows", "Subscriber import rows, by outcome.", ("result",)
        )
        self.http_requests = counter(
            "newsletter_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("handler", "method", "status"),
        )
        self.http_duration = Histogram(
            "newsletter_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ("handler", "method"),
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        # Kept per process and summed over the live ones (multiprocess "livesum").
        self.db_connections = Gauge(
            "newsletter_db_connections",
            "Database connections of the service's processes, by state (open: held by a "
            "pool; in_use: checked out).",
            ("state",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Per relay of NEWSLETTER_MAIL_URL (delivery/relays.py); the labels are known
        # only once a worker has used the relay.
        self.relay_messages = counter(
            "newsletter_relay_messages",
            "Hand-overs per relay, by result (sent; busy: 421 or a refusal at the greeting; "
            "down: connect refused or timed out, TLS failed; error: any other failure).",
            ("relay", "result"),
        )
        self.relay_connections = Gauge(
            "newsletter_relay_connections",
            "SMTP connections per relay, by state (open; allowed: what the adaptive limit "
            "allows after 421s and refusals).",
            ("relay", "state"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Every labelled series exists from the start (at 0): a rate over a series that
        # appears only with its first event would miss that event.
        for family, labels in (
            (self.messages, MESSAGE_RESULTS),
            (self.smtp_replies, REPLY_CLASSES),
            (self.bounces, BOUNCE_KINDS),
            (self.unsubscribes, UNSUBSCRIBE_METHODS),
            (self.signups, SIGNUP_RESULTS),
            (self.webhook_deliveries, WEBHOOK_RESULTS),
            (self.import_rows, IMPORT_RESULTS),
        ):
            for label in labels:
                family.labels(label)
        for state in ("open", "in_use"):
            self.db_connections.labels(state)
        # Bound children, so the send path pays no label lookup per message.
        self.message_result = {r: self.messages.labels(r) for r in MESSAGE_RESULTS}
        self.reply_class = {c: self.smtp_replies.labels(c) for c in REPLY_CLASSES}


_directory: Path | None = None
_instruments: Instruments | None = None
_private_registry: CollectorRegistry | None = None


def configure(directory: Path | None) -> None:
    """Count in the metrics files of `directory` (multiprocess mode), or in this
    process's memory when None. Call it at an entry point, before anything counts:
    instruments made earlier in this process are replaced."""
    global _directory, _instruments, _private_registry
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        # prometheus_client finds the directory through this variable in every
        # process (Celery's children inherit it); our settings decided it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        values.ValueClass = values.MultiProcessValue(_process_identifier)  # type: ignore[no-untyped-call]
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        values.ValueClass = values.MutexValue
    with _tally.lock:
        _tally.reset()  # counted for the instruments being replaced
    _directory = directory
    _instruments = None
    _private_registry = None


def instruments() -> Instruments:
    """This process's instruments, made on first use."""
    global _instruments, _private_registry
    if _instruments is None:
        # In multiprocess mode the values live in the files, read by a collector over
        # the directory; no registry is needed (and a global one would count twice).
        # Otherwise they live in a registry of this module's own.
        if _directory is None:
            _private_registry = CollectorRegistry(auto_describe=True)
        _instruments = Instruments(_private_registry)
    return _instruments


def directory() -> Path | None:
    """The metrics directory this process counts in, if any."""
    return _directory


# --- counting, for the places where things happen -----------------------------------


class _SendTally:
    """The send path's counts, kept in plain numbers and added to the instruments at
    most once a second (and whenever the sender flushes its journal).

    A multiprocess instrument costs about 2 µs per increment (a lock, a pid check and
    a store into the mapped file; 3 µs for a histogram observation): three of them per
    message were a few percent of a message's whole CPU. Adding to plain numbers under
    an uncontended lock costs a tenth of that, and the shared files are written once
    per batch. A process killed with -9 loses at most a second of these counts (its
    results are in its journal all the same).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget what was counted (lock held)."""
        self.messages = dict.fromkeys(MESSAGE_RESULTS, 0)
        self.replies = dict.fromkeys(REPLY_CLASSES, 0)
        self.send_buckets = [0] * (len(SEND_BUCKETS) + 1)
        self.send_sum = 0.0
        self.due = time.monotonic() + PUBLISH_SECONDS

    def publish(self) -> None:
        """Add what was counted to the instruments and start again (lock held)."""
        found = instruments()
        for result, count in self.messages.items():
            if count:
                found.message_result[result].inc(count)
                self.messages[result] = 0
        for reply_class, count in self.replies.items():
            if count:
                found.reply_class[reply_class].inc(count)
                self.replies[reply_class] = 0
        if any(self.send_buckets):
            # Histogram.observe adds one value at a time; these are its own buckets
            # (one per bound, +Inf last) and sum, added to in one go.
            histogram: Any = found.send_duration
            for index, count in enumerate(self.send_buckets):
                if count:
                    histogram._buckets[index].inc(count)
            histogram._sum.inc(self.send_sum)
            self.send_buckets = [0] * (len(SEND_BUCKETS) + 1)
            self.send_sum = 0.0
        self.due = time.monotonic() + PUBLISH_SECONDS


PUBLISH_SECONDS = 1.0
_tally = _SendTally()


def publish() -> None:
    """Add this process's pending send-path counts to the instruments now."""
    with _tally.lock:
        _tally.publish()


def count_message(result: str) -> None:
    """A delivery result was recorded (sent, deferred, failed, suppressed)."""
    with _tally.lock:
        _tally.messages[result] += 1
        if time.monotonic() >= _tally.due:
            _tally.publish()


def count_smtp_reply(code: int | None, dropped: bool = False) -> None:
    """A relay answered a hand-over with `code`; None: it timed out, or (`dropped`)
    the connection went away before any answer."""
    if code is None:
        reply_class = "dropped" if dropped else "timeout"
    elif 200 <= code < 300:
        reply_class = "2xx"
    elif 500 <= code < 600:
        reply_class = "5xx"
    else:
        reply_class = "4xx"  # 4xx, and anything a relay should not say (treated so)
    with _tally.lock:
        _tally.replies[reply_class] += 1
        if time.monotonic() >= _tally.due:
            _tally.publish()


RELAY_RESULTS = ("sent", "busy", "down", "error")
_relay_totals: dict[str, tuple[int, ...]] = {}


def observe_relay(
    relay: str, sent: int, busy: int, down: int, error: int, open_: int, allowed: int
) -> None:
    """A worker process's running totals for one relay (added as the increase since
    the last call) and its connections now."""
    found = instruments()
    totals = (sent, busy, down, error)
    before = _relay_totals.get(relay, (0, 0, 0, 0))
    for result, was, now in zip(RELAY_RESULTS, before, totals, strict=True):
        if now > was:
            found.relay_messages.labels(relay, result).inc(now - was)
        elif not was:
            found.relay_messages.labels(relay, result)  # the series exists at 0
    _relay_totals[relay] = totals
    found.relay_connections.labels(relay, "open").set(open_)
    found.relay_connections.labels(relay, "allowed").set(allowed)


def observe_send(seconds: float) -> None:
    """One message was handed to the mailer in `seconds`."""
    with _tally.lock:
        _tally.send_buckets[bisect.bisect_left(SEND_BUCKETS, seconds)] += 1
        _tally.send_sum += seconds
        if time.monotonic() >= _tally.due:
            _tally.publish()


def observe_render(seconds: float) -> None:
    instruments().render_duration.observe(seconds)


def count_bounce(kind: str) -> None:
    instruments().bounces.labels(kind).inc()


def count_complaint() -> None:
    instruments().complaints.inc()


def count_unsubscribe(source: str) -> None:
    """A reader left a list; `source` is what the subscription records (a fixed set of
    words), folded into a few methods so the series stay few."""
    method = {
        "unsubscribe link": "link",
        "mailto": "mailto",
        "preferences": "preferences",
        "complaint": "complaint",
    }.get(source, "other")
    instruments().unsubscribes.labels(method).inc()


def count_signup(result: str) -> None:
    instruments().signups.labels(result).inc()


def count_import_rows(created: int, updated: int, unchanged: int, skipped: int) -> None:
    rows = instruments().import_rows
    for result, count in (
        ("created", created),
        ("updated", updated),
        ("unchanged", unchanged),
        ("skipped", skipped),
    ):
        if count:
            rows.labels(result).inc(count)


def count_webhook_delivery(result: str) -> None:
    """An outgoing webhook was delivered (2xx) or failed (anything else, no answer)."""
    instruments().webhook_deliveries.labels(result).inc()


def observe_http(handler: str, method: str, status: int, seconds: float) -> None:
    found = instruments()
    found.http_requests.labels(handler, method, str(status)).inc()
    found.http_duration.labels(handler, method).observe(seconds)


def change_db_connections(state: str, delta: int) -> None:
    instruments().db_connections.labels(state).inc(delta)


# --- HTTP --------------------------------------------------------------------------------


class RequestMetrics:
    """ASGI middleware counting every HTTP request by route template (never the path
    itself: it holds tokens, and every path would be a series), method and status,
    with its duration. Requests no route matched are `unmatched`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            handler = getattr(route, "path", None) or "unmatched"
            observe_http(handler, scope.get("method", ""), status, time.perf_counter() - started)


# --- exposition -----------------------------------------------------------------------


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """Everything this process can tell, in Prometheus' text format: the counts of
    every process sharing the metrics directory (or this process's own), and what the
    `extra` collectors compute now."""
    publish()
    registry = CollectorRegistry(auto_describe=False)
    for collector in extra:
        registry.register(collector)
    if _directory is None:
        instruments()
        assert _private_registry is not None
        return generate_latest(_private_registry) + generate_latest(registry)
    with _locked(_directory, fcntl.LOCK_EX):
        fold_dead_processes(_directory)
    with _locked(_directory, fcntl.LOCK_SH):
        registry.register(MultiProcessCollector(None, path=str(_directory)))  # type: ignore[no-untyped-call]
        return generate_latest(registry)


@contextlib.contextmanager
def _locked(path: Path, how: int) -> Iterator[None]:
    fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, how)
        yield
    finally:
        os.close(fd)


# --- dead processes -------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsFile:
    """`<kind>_<host>-<pid>.db`, kind being counter, histogram or gauge_<mode>."""

    path: Path
    kind: str
    host: str
    pid: int

    @classmethod
    def parse(cls, path: Path) -> MetricsFile | None:
        stem = path.name.removesuffix(".db")
        kind, _, owner = stem.rpartition("_")
        host, _, pid = owner.rpartition("-")
        if not kind or not host or not pid.isdigit():
            return None  # an archive, or a file of another tool
        return cls(path, kind, host, int(pid))


def _host() -> str:
    return _UNSAFE.sub("-", socket.gethostname()) or "host"


_identity: tuple[int, str] = (-1, "")


def _process_identifier() -> str:
    """`<host>-<pid>`: distinct for processes that share a directory from several
    machines or containers (where pids repeat). Called on every count: cached per pid."""
    global _identity
    pid = os.getpid()
    if _identity[0] != pid:
        _identity = (pid, f"{_host()}-{pid}")
    return _identity[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid
    return True


def fold_dead_processes(path: Path) -> int:
    """Fold the counts of this machine's dead processes into the archive files and
    drop their gauges; returns how many files went. The caller holds the lock."""
    host = _host()
    folded = 0
    for name in glob.glob(str(path / "*.db")):
        found = MetricsFile.parse(Path(name))
        if found is None or found.host != host or _alive(found.pid):
            continue
        if not found.kind.startswith("gauge_"):
            _add_into(path / f"{found.kind}_{_ARCHIVE}.db", found.path)
        found.path.unlink(missing_ok=True)
        folded += 1
    return folded


def _add_into(archive: Path, dead: Path) -> None:
    """Add the values of `dead` (counter or histogram samples) into `archive`."""
    target: Any = MmapedDict(str(archive))  # type: ignore[no-untyped-call]
    read: Any = MmapedDict.read_all_values_from_file
    try:
        for key, value, timestamp, _ in read(str(dead)):
            current, _ = target.read_value(key)
            target.write_value(key, current + value, timestamp)
    finally:
        target.close()

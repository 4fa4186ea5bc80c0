"""Relay pools: many SMTP connections per worker process, to one relay or several.

Against a relay tens of milliseconds away a message costs a few round trips whatever
the CPU, so throughput comes from connections kept open side by side, not from a
faster client. `RelayPool` is a Mailer that threads may call at once: each `send`
borrows an idle connection (an `SmtpMailer`) of a relay chosen by weight among those
with room, and gives it back for the next message, of this chunk or a later one. A
connection is reopened after `max_messages` (providers cap messages per session).

Adaptive limits, as TCP's congestion window (AIMD): each relay starts allowed its cap
of connections; a 421 or a refused connect halves what it is allowed (at most once a
second, so one burst of refusals counts once), and every GROW_AFTER messages accepted
add one back, up to the cap. Idle connections are closed after IDLE_SECONDS, since a
relay counts them against our cap and another worker process may need them.

Busy is not down. A message refused at the greeting (421) waits a little and tries
again, for up to PATIENCE_SECONDS, and only then is deferred. A relay that is down
(REST_AFTER_DOWN refused connects or TLS failures in a row) or in a 421 storm
(REST_AFTER_BUSY refusals in a row at one connection and nothing accepted for
STORM_SECONDS) rests for `rest_seconds`, and its share goes to the others; when every
relay rests longer than a message's patience, `send` fails with a
RelayUnavailableError, the row is deferred and the ledger retries it.

A message refused before its session existed (or on a kept session the relay had
closed, before the message went) was never handed over, so it is tried again at once on
another connection; one that failed while it was being handed over is deferred as
before, since the relay may have received it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any

import redis

from newsletter import metrics
from newsletter.config import MailTarget, Settings, SmtpTarget
from newsletter.delivery.mailers import (
    Handed,
    Mailer,
    OutgoingMessage,
    SendResult,
    SmtpMailer,
    make_mailer,
    one_by_one,
)
from newsletter.errors import DeliveryError, RelayUnavailableError

log = logging.getLogger(__name__)

GROW_AFTER = 20  # messages accepted per connection given back after a halving
REST_AFTER_DOWN = 3  # refused connects or TLS failures in a row
REST_AFTER_BUSY = 8  # refusals in a row at one connection, and nothing accepted for
STORM_SECONDS = 10.0  # this long: a storm, not just a busy relay
MAX_TRIES = 4  # connections tried for one message when relays are down
PATIENCE_SECONDS = 20.0  # how long a message waits for a busy relay before it is deferred
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0
IDLE_SECONDS = 10.0  # an idle connection is closed after this long
HALVE_GAP_SECONDS = 1.0
WAIT_SLICE_SECONDS = 0.5

# Waits until one more message may go through a relay with a rate limit: (key, rate).
Pace = Callable[[str, float], None]
REPORT_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class RelayState:
    """One relay as this process sees it (for status and metrics)."""

    name: str
    cap: int
    allowed: int
    open: int
    in_use: int
    sent: int
    errors: int
    busy: int  # 421s and other refusals at the greeting
    down: int  # refused or timed-out connects, TLS failures
    rests: int
    resting_seconds: float
    most_open: int = 0  # connections open at once, at most
    rate: float = 0.0  # messages accepted per second since the last report


Report = Callable[[list[RelayState]], None]


class Relay:
    """One relay's connections and health; every method runs under the pool's lock."""

    def __init__(self, target: SmtpTarget, cap: int) -> None:
        self.target = target
        self.name = target.name
        self.cap = cap
        self.allowed = float(cap)
        self.in_use = 0
        self.idle: list[tuple[float, SmtpMailer]] = []  # (given back at, connection)
        self.rest_until = 0.0
        self.halved_at = float("-inf")
        self.accepted_since_halving = 0
        self.busy_streak = 0
        self.down_streak = 0
        self.accepted_at = time.monotonic()
        self.sent = self.errors = self.busy = self.down = self.rests = 0
        self.most_open = 0
        self.reported_sent = 0
        self.assigned = 0  # messages given to this relay (its share by weight)
        self.rested = False  # back from a rest: starts level with the others

    def slots(self) -> int:
        return max(1, int(self.allowed))

    def resting(self, now: float) -> bool:
        return now < self.rest_until

    def has_room(self) -> bool:
        return self.in_use < self.slots()

    def note_sent(self, now: float) -> None:
        self.sent += 1
        self.accepted_at = now
        self.busy_streak = self.down_streak = 0
        if self.allowed < self.cap:
            self.accepted_since_halving += 1
            if self.accepted_since_halving >= GROW_AFTER:
                self.allowed = min(float(self.cap), self.allowed + 1)
                self.accepted_since_halving = 0

    def note_busy(self, now: float, rest_seconds: float) -> None:
        self.errors += 1
        self.busy += 1
        self.busy_streak += 1
        self._halve(now)
        storm = self.busy_streak >= REST_AFTER_BUSY and self.slots() == 1
        if storm and now - self.accepted_at >= STORM_SECONDS:
            self._rest(now, rest_seconds, "has answered 421 to every connection for a while")

    def note_down(self, now: float, rest_seconds: float) -> None:
        self.errors += 1
        self.down += 1
        self.down_streak += 1
        self._halve(now)
        if self.down_streak >= REST_AFTER_DOWN:
            self._rest(now, rest_seconds, "refuses connections or fails TLS")

    def _halve(self, now: float) -> None:
        if now - self.halved_at >= HALVE_GAP_SECONDS:
            self.allowed = max(1.0, self.allowed / 2)
            self.halved_at = now
            self.accepted_since_halving = 0

    def _rest(self, now: float, seconds: float, why: str) -> None:
        self.rest_until = now + seconds
        self.rested = True
        self.busy_streak = self.down_streak = 0
        self.rests += 1
        log.warning("relay %s %s: resting for %.0f s", self.name, why, seconds)

    def state(self, now: float, seconds: float = 0.0) -> RelayState:
        """This relay now; `seconds` since the last report give the rate."""
        rate = (self.sent - self.reported_sent) / seconds if seconds > 0 else 0.0
        return RelayState(
            self.name,
            self.cap,
            self.slots(),
            self.in_use + len(self.idle),
            self.in_use,
            self.sent,
            self.errors,
            self.busy,
            self.down,
            self.rests,
            round(max(0.0, self.rest_until - now), 1),
            self.most_open,
            round(rate, 1),
        )


class RelayPool:
    """A Mailer over the connections of one relay or several, safe to call from
    `concurrency` threads at once (see the module's docstring)."""

    def __init__(
        self,
        targets: Sequence[SmtpTarget],
        connections: int,
        max_messages: int = 0,
        rest_seconds: float = 30.0,
        pace: Pace | None = None,
        report: Report | None = None,
        patience: float = PATIENCE_SECONDS,
    ) -> None:
        if not targets:
            raise ValueError("a relay pool needs at least one relay")
        self.relays = [Relay(t, t.connections or connections) for t in targets]
        self.concurrency = sum(r.cap for r in self.relays)
        self.max_messages = max_messages
        self.rest_seconds = rest_seconds
        self.pace = pace
        self.report = report
        self.patience = patience
        self._reported_at = time.monotonic()
        self._lock = threading.Condition()
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None

    def send(self, message: OutgoingMessage) -> SendResult:
        deadline = time.monotonic() + self.patience
        tries, pause = 0, FIRST_BACKOFF_SECONDS
        while True:
            relay, connection = self._borrow(deadline)
            try:
                if relay.target.rate > 0 and self.pace is not None:
                    self.pace(f"relay:{relay.name}", relay.target.rate)
                result = connection.send(message)
            except RelayUnavailableError as exc:
                # No session, so nothing was handed over: another connection may try.
                self._give_back(relay, connection, exc)
                if exc.kind == "busy":
                    # Busy is no fault: wait a little (fewer connections now) and
                    # try again, as long as the message's patience lasts.
                    if time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, MAX_BACKOFF_SECONDS)
                    continue
                tries += 1
                if tries >= MAX_TRIES:
                    raise
                continue
            except DeliveryError as exc:
                self._give_back(relay, connection, exc)
                raise
            except BaseException:
                self._give_back(relay, connection, None, broken=True)
                raise
            self._give_back(relay, connection, None)
            return result

    def send_many(self, messages: Iterable[OutgoingMessage]) -> Iterator[Handed]:
        """Each message's result as it comes, over one borrowed connection while it
        lasts (`SmtpMailer.send_many`: a message's end and the next one's envelope in
        one write); messages that connection could not hand over, and the rest, go
        by `send`."""
        queue = iter(messages)
        first = next(queue, None)
        if first is None:
            return
        try:
            relay, connection = self._borrow(time.monotonic() + self.patience)
        except RelayUnavailableError as exc:
            # The first message has waited its patience, as `send` would have made it.
            yield first, exc
            yield from one_by_one(self.send, queue)
            return
        left: list[OutgoingMessage] = []
        last_error: DeliveryError | None = None
        broken = True
        handed = connection.send_many(self._paced(relay, first, queue))
        try:
            for message, result in handed:
                if isinstance(result, RelayUnavailableError):
                    left.append(message)
                    last_error = result
                    continue
                with self._lock:
                    self._note(relay, result if isinstance(result, DeliveryError) else None)
                yield message, result
            broken = False
        finally:
            handed.close()  # (stopped early: a session with an envelope ahead is dropped)
            self._give_back(relay, connection, last_error, broken, counted=last_error is None)
        yield from one_by_one(self.send, chain(left, queue))

    def _paced(
        self, relay: Relay, first: OutgoingMessage, rest: Iterator[OutgoingMessage]
    ) -> Iterator[OutgoingMessage]:
        """The messages for one connection of `relay`, each counted to the relay's
        share and paced to its rate as it is taken."""
        for number, message in enumerate(chain([first], rest)):
            if number:
                with self._lock:
                    relay.assigned += 1
            if relay.target.rate > 0 and self.pace is not None:
                self.pace(f"relay:{relay.name}", relay.target.rate)
            yield message

    def _borrow(self, deadline: float) -> tuple[Relay, SmtpMailer]:
        """A connection of a relay with room, waiting for one until `deadline`."""
        surplus: list[SmtpMailer] = []
        with self._lock:
            self._start_reaper()
            while True:
                now = time.monotonic()
                awake = [r for r in self.relays if not r.resting(now)]
                free = [r for r in awake if r.has_room()]
                if free:
                    break
                wake = deadline
                if not awake:
                    wake = min(r.rest_until for r in self.relays)
                    if wake > deadline:
                        raise RelayUnavailableError(
                            f"every relay is resting after failures (the first is back in "
                            f"{wake - now:.0f} s)",
                            "resting",
                        )
                elif now >= deadline:
                    raise RelayUnavailableError("no connection to a relay came free", "busy")
                self._lock.wait(min(WAIT_SLICE_SECONDS, max(0.0, wake - now)))
            for back in (r for r in awake if r.rested):
                # Level with the others, not owed everything it missed while resting.
                back.rested = False
                level = max(
                    (o.assigned / o.target.weight for o in awake if o is not back), default=0
                )
                back.assigned = int(level * back.target.weight)
            # Weighted: the relay furthest behind its share; under full load each
            # relay takes what its connections carry (no connection waits idle).
            relay = min(free, key=lambda r: (r.assigned + 1) / r.target.weight)
            relay.assigned += 1
            relay.in_use += 1
            if relay.idle:
                connection = relay.idle.pop()[1]
            else:
                connection = SmtpMailer(relay.target, self.max_messages)
                relay.most_open = max(relay.most_open, relay.in_use + len(relay.idle))
            # Fewer allowed than open since a halving: close the idle surplus.
            while relay.idle and relay.in_use + len(relay.idle) > relay.slots():
                surplus.append(relay.idle.pop(0)[1])
        for extra in surplus:  # outside the lock: QUIT takes a round trip
            extra.close()
        return relay, connection

    def _start_reaper(self) -> None:
        """Idle connections are closed after IDLE_SECONDS by a thread of this process:
        a relay counts them against our cap (another worker may need them)."""
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="smtp-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while not self._closed.wait(IDLE_SECONDS / 4):
            stale: list[SmtpMailer] = []
            with self._lock:
                old = time.monotonic() - IDLE_SECONDS
                for relay in self.relays:
                    stale.extend(c for at, c in relay.idle if at < old)
                    relay.idle = [(at, c) for at, c in relay.idle if at >= old]
            for connection in stale:
                with contextlib.suppress(Exception):
                    connection.close()

    def _note(self, relay: Relay, error: DeliveryError | None, broken: bool = False) -> None:
        """Count one message's result to its relay (with the lock held)."""
        now = time.monotonic()
        if isinstance(error, RelayUnavailableError):
            if error.kind == "busy":
                relay.note_busy(now, self.rest_seconds)
            elif error.kind != "stale":  # (a kept session the relay had closed)
                relay.note_down(now, self.rest_seconds)
        elif error is not None:
            relay.errors += 1
            if error.code == 421:  # the relay closed the session: it is busy
                relay.note_busy(now, self.rest_seconds)
        elif not broken:
            relay.note_sent(now)

    def _give_back(
        self,
        relay: Relay,
        connection: SmtpMailer,
        error: DeliveryError | None,
        broken: bool = False,
        counted: bool = False,
    ) -> None:
        """The connection back to its relay (kept idle, or closed), and unless
        `counted` already, the last message's result counted."""
        with self._lock:
            relay.in_use -= 1
            now = time.monotonic()
            if not counted:
                self._note(relay, error, broken)
            keep = (
                not broken
                and connection.connected
                and not relay.resting(now)
                and relay.in_use + len(relay.idle) < relay.slots()
            )
            if keep:
                relay.idle.append((now, connection))
            self._lock.notify()
            due = self.report is not None and now - self._reported_at >= REPORT_EVERY_SECONDS
        if not keep:
            connection.close()
        if due:
            self.report_now()

    def report_now(self) -> None:
        """Hand the relays' state to `report` (status and metrics read it)."""
        if self.report is None:
            return
        with self._lock:
            now = time.monotonic()
            seconds, self._reported_at = now - self._reported_at, now
            states = [r.state(now, seconds) for r in self.relays]
            for r in self.relays:
                r.reported_sent = r.sent
        try:
            self.report(states)
        except Exception as exc:  # status is an aid: sending goes on without it
            log.debug("cannot report relay state: %s", exc)

    def states(self) -> list[RelayState]:
        now = time.monotonic()
        with self._lock:
            return [r.state(now) for r in self.relays]

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            idle = [c for r in self.relays for _, c in r.idle]
            for r in self.relays:
                r.idle = []
        for connection in idle:
            with contextlib.suppress(Exception):
                connection.close()


class FailoverMailer:
    """A Mailer of single messages (a confirmation, a test send) over a pool of relays:
    each relay in turn, the heaviest first, one connection each. The next relay is tried
    only when this one cannot have received the message (no session:
    RelayUnavailableError); any other error is the message's own, and stops."""

    def __init__(self, targets: Sequence[SmtpTarget]) -> None:
        ordered = sorted(targets, key=lambda t: -t.weight)  # (a stable sort: ties keep order)
        self.mailers = [SmtpMailer(t) for t in ordered]

    def send(self, message: OutgoingMessage) -> SendResult:
        refusals = []
        for mailer in self.mailers:
            try:
                return mailer.send(message)
            except RelayUnavailableError as exc:
                refusals.append(str(exc))
        raise RelayUnavailableError("; ".join(refusals), "down")

    def close(self) -> None:
        for mailer in self.mailers:
            mailer.close()


def single_mailer(targets: Sequence[MailTarget]) -> Mailer:
    """The mailer of single messages: NEWSLETTER_MAIL_URL's one relay (or outbox), or
    its relays in turn (`FailoverMailer`)."""
    smtp = [t for t in targets if isinstance(t, SmtpTarget)]
    if len(smtp) < 2 or len(smtp) != len(targets):
        return make_mailer(targets[0])
    return FailoverMailer(smtp)


def campaign_mailer(
    settings: Settings, pace: Pace | None = None, report: Report | None = None
) -> Mailer:
    """The mailer of a worker process's campaign mail: a pool over the relays of
    NEWSLETTER_MAIL_URL (its connections kept for the life of the process), or the
    outbox."""
    targets = settings.mail_targets
    smtp = [t for t in targets if isinstance(t, SmtpTarget)]
    if len(smtp) != len(targets):
        return make_mailer(targets[0])
    return RelayPool(
        smtp,
        settings.smtp_connections,
        settings.smtp_messages_per_connection,
        settings.smtp_rest_seconds,
        pace,
        report,
    )


# Each worker process's view of each relay, in Redis for `newsletter status` and the
# bench: hash newsletter:relays:<relay> → {<host>:<pid>: JSON state}.
RELAYS_KEY = "newsletter:relays:"
STATE_TTL_SECONDS = 120
STALE_SECONDS = 30.0


class RelayReport:
    """Puts a process's relay states into the metrics and, with a client, into Redis
    (a Report)."""

    def __init__(self, client: redis.Redis | None) -> None:
        self.client = client
        self.process = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, states: list[RelayState]) -> None:
        for s in states:
            other = s.errors - s.busy - s.down
            metrics.observe_relay(s.name, s.sent, s.busy, s.down, other, s.open, s.allowed)
        if self.client is None:
            return
        pipe = self.client.pipeline(transaction=False)
        for state in states:
            key = RELAYS_KEY + state.name
            value = json.dumps({**asdict(state), "at": time.time()})
            pipe.hset(key, self.process, value)
            pipe.expire(key, STATE_TTL_SECONDS)
        pipe.execute()


@dataclass(frozen=True)
class RelaySummary:
    """One relay over every worker process that reported it lately."""

    name: str
    processes: int
    allowed: int  # connections allowed now (after backing off), summed
    open: int
    most_open: int  # peaks of each process, summed
    rate: float
    sent: int
    errors: int
    busy: int
    down: int
    rests: int
    resting_seconds: float


def read_relay_summaries(client: redis.Redis, max_age: float = STALE_SECONDS) -> list[RelaySummary]:
    """What the workers last reported per relay (processes silent for `max_age`
    seconds are left out)."""
    summaries = []
    now = time.time()
    for key in sorted(client.scan_iter(match=RELAYS_KEY + "*", count=100)):
        name = key.decode() if isinstance(key, bytes) else str(key)
        states = [json.loads(v) for v in client.hvals(name)]
        states = [s for s in states if now - float(s.get("at", 0)) <= max_age]
        if not states:
            continue

        def total(field: str, states: list[dict[str, Any]] = states) -> Any:
            return sum(s[field] for s in states)

        summaries.append(
            RelaySummary(
                name.removeprefix(RELAYS_KEY),
                len(states),
                total("allowed"),
                total("open"),
                total("most_open"),
                round(total("rate"), 1),
                total("sent"),
                total("errors"),
                total("busy"),
                total("down"),
                total("rests"),
                max(s["resting_seconds"] for s in states),
            )
        )
    return summaries

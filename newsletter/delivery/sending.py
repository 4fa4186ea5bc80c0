"""Sending a chunk: claim its rows, fill each recipient's slots, hand over, record.

Each result is journalled as soon as the mailer returns (`journal.Journal`: one
write(2), replayed into the ledger if we die), so a killed worker leaves at most the
one message each connection was handing over unrecorded; that row keeps the dead
task's claim, and when the claim expires (or the task is redelivered) it is sent
again: at most one duplicate per open connection of a killed process, nobody skipped.
A mailer with `concurrency` above one (a relay pool, relays.py) gets that many of the
chunk's messages at once, from threads of this process: far from the relay,
throughput comes from connections side by side, not from CPU. The run's email was encoded once
(`MessageTemplate`); per recipient we only sign two tokens and splice values.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from itertools import islice
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.audience.subscriptions import suppress_address
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.campaigns.runs import finish_run
from newsletter.config import Settings
from newsletter.db import utcnow
from newsletter.delivery.content import list_headers, run_email, run_lists
from newsletter.delivery.dkim import signer_from_settings
from newsletter.delivery.journal import Journal, claimed_by, result_line
from newsletter.delivery.mailers import Mailer, OutgoingMessage, SendResult
from newsletter.delivery.outgoing import Outgoing
from newsletter.delivery.relays import RelayPool
from newsletter.delivery.throttle import LocalThrottle, Throttle
from newsletter.errors import (
    ConfigError,
    DeliveryError,
    HardBounceError,
    InvalidInputError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    ThrottledError,
)
from newsletter.rendering.library import template_library
from newsletter.rendering.mime import (
    UNSUBSCRIBE_TOKEN,
    ListHeaders,
    MessageTemplate,
    Recipient,
    message_date,
)
from newsletter.rendering.model import PersonalSpec, Snapshot
from newsletter.rendering.personal import Variants
from newsletter.rendering.slots import ATTRIBUTE_PREFIX, TRACK_KEY
from newsletter.rendering.tracking import Pixel, track_links, trackable_links
from newsletter.runs.ledger import (
    Chunk,
    claim_chunk,
    claimed_rows,
    mark_progress,
    release_claim,
    renew_claim,
    retry_delay,
)
from newsletter.runs.lifecycle import current_status, may_send
from newsletter.runs.models import DeliveryStatus, Run, RunStatus
from newsletter.tracking.links import register_links
from newsletter.tracking.policy import RunPolicy, Tracking, note, run_policy
from newsletter.tracking.tokens import PIXEL, TrackingSigner, new_nonce

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 1.0
PROBE_MESSAGES = 5  # sent one at a time to see how far the relay is
BATCH_ROWS = 8  # rows a sending thread takes at a time, at most
PROBE_EVERY_SECONDS = 60.0  # how often a chunk looks at pause/cancel and renews its claim
COMPILED_RUNS_KEPT = 64  # compiled message templates cached per worker process


def subscriber_links(
    settings: Settings, signer: TokenSigner, subscriber_id: int, list_id: int
) -> dict[str, str]:
    """The signed unsubscribe and preferences URLs of one subscriber on one list."""
    unsubscribe = signer.sign(Purpose.unsubscribe, subscriber_id, list_id)
    preferences = signer.sign(Purpose.preferences, subscriber_id, list_id)
    return {
        "unsubscribe_url": f"{settings.base_url}/unsubscribe/{unsubscribe}",
        "preferences_url": f"{settings.base_url}/preferences/{preferences}",
        UNSUBSCRIBE_TOKEN: unsubscribe,
    }


def recipient_values(
    settings: Settings,
    signer: TokenSigner,
    row: Any,
    attribute_keys: tuple[str, ...],
    sequence_id: int | None = None,
) -> dict[str, str]:
    values = {"name": row.name or "", "email": row.email}
    values.update(subscriber_links(settings, signer, row.subscriber_id, row.list_id))
    if sequence_id is not None:
        token = signer.sign(Purpose.next_step, row.subscriber_id, sequence_id)
        values["next_url"] = f"{settings.base_url}/next/{token}"
    attributes = row.attributes or {}
    for key in attribute_keys:
        value = attributes.get(key.removeprefix(ATTRIBUTE_PREFIX))
        values[key] = "" if value is None else str(value)
    return values


@dataclass(frozen=True)
class Outcome:
    """What became of one row; `hard_bounce`: (address, reply) to suppress."""

    status: DeliveryStatus
    hard_bounce: tuple[str, str] | None = None


@dataclass
class Message:
    """A run's message (or one variant of it) ready for slots."""

    template: MessageTemplate
    attribute_keys: tuple[str, ...]  # the subscriber attributes its slots show

    tracked: bool = False  # its links (and maybe a pixel) carry the `track` slot

    @classmethod
    def of(cls, snapshot: Snapshot, headers: ListHeaders) -> Message:
        template = MessageTemplate(snapshot, headers)
        keys = (*template.text.keys, *template.html.keys, *template.subject.keys)
        return cls(
            template,
            tuple(dict.fromkeys(k for k in keys if k.startswith(ATTRIBUTE_PREFIX))),
            TRACK_KEY in template.html.keys,
        )


@dataclass
class Messages:
    """One email (or variant) as each kind of recipient gets it: untracked, with
    tracked links, with tracked links and the open pixel (compiled once per run)."""

    plain: Message
    links: Message | None = None
    pixel: Message | None = None

    def pick(self, tracking: Tracking) -> Message:
        if not tracking.on:
            return self.plain
        chosen = self.pixel if tracking.opens else self.links
        return chosen or self.plain


@dataclass(frozen=True)
class LinkTracker:
    """Writes a run's tracked links into its HTML once (rendering/tracking.py); the
    link ids come from the database (`register`), never from the email."""

    base_url: str
    run_id: int
    signer: TrackingSigner
    register: Callable[[Sequence[str]], dict[str, int]]
    policy: RunPolicy

    def compile(self, snapshot: Snapshot, headers: ListHeaders) -> Messages:
        messages = Messages(Message.of(snapshot, headers))
        wanted = {t.opens for t in self.policy.lists.values() if t.on}
        if not wanted:
            return messages
        # "View in your browser" is a service link, as unsubscribe is: not counted.
        own_copy = f"{self.base_url}/archive/emails/"
        ids = self.register(trackable_links(snapshot.html, own_copy))
        tracked = {
            url: f"{self.base_url}/t/c/{self.signer.link_part(self.run_id, link_id)}."
            for url, link_id in ids.items()
        }
        if False in wanted:
            html = track_links(snapshot.html, snapshot.marker, tracked)
            messages.links = Message.of(replace(snapshot, html=html), headers)
        if True in wanted:
            pixel = Pixel(f"{self.base_url}/t/o/{self.signer.link_part(self.run_id, PIXEL)}.")
            html = track_links(snapshot.html, snapshot.marker, tracked, pixel)
            messages.pixel = Message.of(replace(snapshot, html=html), headers)
        return messages


@dataclass
class CompiledRun:
    messages: Messages
    salt: str  # the same in every worker for one run; differs between runs and databases
    sequence_id: int | None
    policy: RunPolicy
    run_id: int
    # When the templates read the reader: a message per variant (rendering/personal.py).
    variants: Variants[Messages] | None = None

    @property
    def message(self) -> Message:
        return self.messages.plain

    def messages_for(self, row: Any) -> Messages:
        if self.variants is None:
            return self.messages
        return self.variants.get(row.name or "", row.email, row.attributes)


class Lanes:
    """Threads sending a chunk's rows while the chunk's own thread looks after the
    claim: each takes a few rows at a time (one hand-over a batch, not a message)
    until none are left or it is halted. What each batch became is kept for the
    chunk's thread, which counts it (it owns the database session) when it wakes:
    when a lane ends, or at its next check, not once a message."""

    def __init__(
        self,
        rows: Iterator[Any],
        send: Callable[[list[Any]], list[Outcome]],
        count: Callable[[list[Outcome]], None],
    ) -> None:
        self._rows = rows
        self._rows_lock = threading.Lock()
        self._send = send
        self._count = count
        # A batch's outcomes, an error, or None: a lane has ended (and `_ended` is set).
        self._finished: deque[list[Outcome] | BaseException | None] = deque()
        self._ended = threading.Event()
        self._halt = threading.Event()
        self.running = 0
        self.exhausted = False  # every row has been taken

    def take(self, size: int) -> list[Any]:
        with self._rows_lock:
            batch = list(islice(self._rows, size))
        if not batch:
            self.exhausted = True
        return batch

    def run(self, lanes: int, size: int, executor: Callable[[], ThreadPoolExecutor]) -> None:
        """Have `lanes` threads sending, `size` rows a batch."""
        while self.running < lanes and self._may_start():
            executor().submit(self._lane, self._halt, size, self._send, False)
            self.running += 1

    def once(
        self, send: Callable[[list[Any]], list[Outcome]], executor: Callable[[], ThreadPoolExecutor]
    ) -> None:
        """One row through `send`, alone: wait for the lanes to end first (`stop`)."""
        if not self.running and self._may_start():
            executor().submit(self._lane, self._halt, 1, send, True)
            self.running += 1

    def _may_start(self) -> bool:
        if not self.running and self._halt.is_set():
            self._halt = threading.Event()  # the halted lanes have all ended
        return not self.exhausted and not self._halt.is_set()

    def _lane(
        self,
        halt: threading.Event,
        size: int,
        send: Callable[[list[Any]], list[Outcome]],
        once: bool,
    ) -> None:
        try:
            while not halt.is_set():
                batch = self.take(size)
                if not batch:
                    break
                self._finished.append(send(batch))
                if once:
                    break
        except BaseException as exc:  # handed to the chunk's thread, which raises it
            self._finished.append(exc)
        finally:
            self._finished.append(None)
            self._ended.set()

    def settle(self, wait: float = 0.0, counting: bool = True) -> None:
        """Count what the lanes have finished, after waiting up to `wait` seconds for
        one of them to end."""
        if wait > 0 and self.running:
            self._ended.wait(wait)
        self._ended.clear()  # before reading: a lane ending from here on sets it again
        while self._finished:
            item = self._finished.popleft()
            if item is None:
                self.running -= 1
            elif isinstance(item, BaseException):
                if counting:
                    raise item
            elif counting:
                self._count(item)

    def stop(self) -> None:
        """Lanes end after the batch in hand; `settle` sees them go."""
        self._halt.set()

    def halt(self, counting: bool = True) -> None:
        """Stop the lanes and wait for them (their batches journalled, and counted)."""
        self.stop()
        while self.running:
            self.settle(3600.0, counting)


@dataclass
class ChunkSender:
    """Sends chunks for one worker process: keeps compiled runs, the mailer, the throttle."""

    settings: Settings
    mailer: Mailer
    throttle: Throttle = field(default_factory=LocalThrottle)
    # Keyed by (run id, archive key): a run id seen again (a database emptied and
    # refilled, a deleted run's id reused on SQLite) is another run, compiled afresh.
    compiled: dict[tuple[int, str], CompiledRun] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signer = TokenSigner(self.settings.secret_key)
        self.tracking_signer = TrackingSigner(self.settings.secret_key)
        self.sender_domain = self.settings.sender_domain  # parsed once, used per message
        self.lease = timedelta(seconds=self.settings.lease_seconds)
        self.library = template_library(self.settings.templates_dir)
        # DKIM: one signer per sender (the key is parsed once); None without a key.
        self.outgoing = Outgoing(
            parseaddr(self.settings.from_address)[1],
            self.mailer,
            signer_from_settings(self.settings),
        )
        # Messages handed over at once (threads of this process): the mailer's own
        # concurrency, e.g. a relay pool's connections; 1 sends in this thread.
        self.concurrency = max(1, int(getattr(self.mailer, "concurrency", 1)))
        self._threads: ThreadPoolExecutor | None = None
        # Messages measured one at a time, the least wall and CPU seconds of one (see
        # `_in_flight_wanted`), and when to measure again.
        self._probed, self._probe_wall, self._probe_cpu = 0, float("inf"), float("inf")
        self._probe_due = 0.0
        # Building a message holds the GIL anyway; one at a time keeps the per-run
        # caches (variants, tracked links) single-threaded.
        self._build_lock = threading.Lock()
        directory = self.settings.journal_directory
        try:
            self.journal = Journal(directory, self.settings.database_url)
        except OSError as exc:
            raise ConfigError(
                f"NEWSLETTER_JOURNAL_DIR: cannot keep a delivery journal in "
                f"{directory}: {exc.strerror or exc}"
            ) from exc

    def close(self, engine: Engine) -> None:
        """Put every journalled result into the ledger and stop (process shutdown)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        self.mailer.close()
        self.journal.close(engine)

    def _executor(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="smtp")
        return self._threads

    def _compile(self, session: Session, run_id: int) -> CompiledRun:
        """The run's compiled message, kept per process: the run (with its frozen
        content, tens of kilobytes) is loaded only by the first chunk that needs it."""
        archive_key = session.scalar(select(Run.archive_key).where(Run.id == run_id)) or ""
        compiled = self.compiled.get((run_id, archive_key))
        if compiled is None:
            run = session.get_one(Run, run_id)
            snapshot = run_email(session, run, self.settings)
            headers = list_headers(self.settings, run_lists(session, run), run.tag, str(run.id))
            policy = run_policy(session, run.id)
            salt = hashlib.sha256(f"{run.id}:{run.created_at.isoformat()}".encode()).hexdigest()
            sequence_id = run.sequence_id
            # Links are registered through connections of their own: end this
            # session's transaction first (on SQLite it would hold the write lock).
            session.commit()
            engine: Engine = session.get_bind()  # type: ignore[assignment]

            def register(urls: Sequence[str]) -> dict[str, int]:
                with engine.begin() as connection:
                    return register_links(connection, run_id, urls)

            tracker = LinkTracker(
                self.settings.base_url, run_id, self.tracking_signer, register, policy
            )
            variants = None
            if snapshot.personal is not None:
                spec = PersonalSpec.from_json(snapshot.personal)
                variants = Variants(
                    spec, lambda variant: tracker.compile(variant, headers), 256, self.library
                )
            if len(self.compiled) >= COMPILED_RUNS_KEPT:  # a long-lived worker sees many runs
                self.compiled.pop(next(iter(self.compiled)))
            compiled = self.compiled[(run_id, archive_key)] = CompiledRun(
                tracker.compile(snapshot, headers), salt[:10], sequence_id, policy, run_id, variants
            )
        return compiled

    def send_chunk(self, session: Session, chunk: Chunk, task_claim: str) -> dict[str, int]:
        """Send every sendable delivery of the chunk for the task `task_claim`."""
        counts = {"sent": 0, "deferred": 0, "failed": 0, "suppressed": 0}
        if not may_send(current_status(session, chunk.run_id)):
            return counts
        compiled = self._compile(session, chunk.run_id)
        engine: Engine = session.get_bind()  # type: ignore[assignment]
        # Results of dead workers on this machine reach the ledger before any row is
        # claimed: only then is a row that is still `sending` really unsent.
        self.journal.flush(engine)
        self.journal.replay_orphans(engine)
        claim = claimed_by(task_claim, self.journal.tag)
        claim_chunk(session, chunk, claim, utcnow(), self.lease)
        session.commit()
        personal = compiled.variants is not None
        rows = claimed_rows(
            session, chunk, claim, personal or bool(compiled.message.attribute_keys)
        )
        # End the session's transaction before sending: the journal writes results
        # through connections of its own, and on SQLite a read transaction left open
        # here could not later turn into a write.
        session.commit()
        try:
            stopped = self._send_rows(session, chunk, claim, rows, compiled, engine, counts)
        finally:
            self.journal.flush(engine)
            if isinstance(self.mailer, RelayPool):
                self.mailer.report_now()
        if not stopped:
            mark_progress(session, chunk.run_id)
            finish_run(session, chunk.run_id)
            session.commit()
        return counts

    def _send_rows(
        self,
        session: Session,
        chunk: Chunk,
        claim: str,
        rows: list[Any],
        compiled: CompiledRun,
        engine: Engine,
        counts: dict[str, int],
    ) -> bool:
        """Send the claimed rows, a few at a time; returns True if a pause or cancel
        stopped it.

        Threads of this process send (`Lanes`): one for a relay next door, more when
        one message's time end to end is a few times the CPU it takes here (a relay
        far away: `_in_flight_wanted`). Meanwhile this thread sleeps, and every second
        (and when a lane ends) counts their outcomes, journals, looks at pause and
        cancel, and renews the claim: a send that waits for a busy relay never holds
        up the claim."""
        date = message_date()

        def send(batch: list[Any]) -> list[Outcome]:
            return self._send_batch(engine, batch, claim, compiled, date)

        def count(outcomes: list[Outcome]) -> None:
            for outcome in outcomes:
                self._count(session, outcome, counts)

        lanes = Lanes(iter(rows), send, count)
        next_check = time.monotonic() + CHECK_EVERY_SECONDS
        try:
            while True:
                wanted = self._in_flight_wanted()
                if wanted == 0:  # measuring: one message alone, timed
                    if lanes.running:
                        lanes.stop()
                    else:
                        lanes.once(lambda batch: self._send_measured(send, batch), self._executor)
                else:
                    size = max(1, min(BATCH_ROWS, len(rows) // (2 * wanted)))
                    lanes.run(wanted, size, self._executor)
                if lanes.exhausted and not lanes.running:
                    return False
                lanes.settle(max(0.0, next_check - time.monotonic()))
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CHECK_EVERY_SECONDS
                    # Messages in flight are settled before rows are handed back: their
                    # rows stay `sending` until journalled, and must not go twice.
                    if self._stopped(session, chunk, claim, engine, lanes.halt):
                        return True
        finally:
            lanes.halt(counting=False)  # an error above: the others finish and journal

    def _in_flight_wanted(self) -> int:
        """How many messages are worth having in flight (Little's law): one message's
        time end to end over the CPU it takes here, rounded up, at least 1 and at most
        the connections. A relay next door gets one or two (more would only add
        threads fighting over the interpreter); one 20 ms away, dozens. 0: measure
        first (a few messages sent one at a time, at the start and every
        PROBE_EVERY_SECONDS)."""
        if self.concurrency == 1:
            return 1
        if time.monotonic() >= self._probe_due:
            self._probe_due = time.monotonic() + PROBE_EVERY_SECONDS
            self._probed, self._probe_wall, self._probe_cpu = 0, float("inf"), float("inf")
        if self._probed < PROBE_MESSAGES:
            return 0
        if self._probe_cpu <= 0:
            return self.concurrency
        # The quickest message's time over the cheapest one's CPU: the messages least
        # disturbed by other work on the machine (the first of a process are also
        # the slowest to build, caches cold).
        return max(1, min(self.concurrency, math.ceil(self._probe_wall / self._probe_cpu)))

    def _send_measured(
        self, send: Callable[[list[Any]], list[Outcome]], rows: list[Any]
    ) -> list[Outcome]:
        """`send` of one row, alone in flight, timed (wall and CPU) for
        `_in_flight_wanted`."""
        wall, cpu = time.perf_counter(), time.thread_time()
        outcomes = send(rows)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        self._probed += len(rows)
        self._probe_wall = min(self._probe_wall, wall / len(rows))
        self._probe_cpu = min(self._probe_cpu, cpu / len(rows))
        return outcomes

    def _stopped(
        self,
        session: Session,
        chunk: Chunk,
        claim: str,
        engine: Engine,
        drain: Callable[[], None] | None = None,
    ) -> bool:
        """The check made every second while a chunk sends: results into the ledger,
        then pause or cancel (the rest handed back, after the messages in flight) or
        the claim renewed."""
        self.journal.flush(engine)  # the ledger is never more than a second behind
        status = current_status(session, chunk.run_id)
        if may_send(status):
            renew_claim(session, chunk, claim, utcnow() + self.lease)
            session.commit()
            return False
        if drain is not None:
            drain()  # the messages in flight first
            self.journal.flush(engine)
        # Paused: hand the rest back. Cancelled: the rest will never go.
        released = (
            DeliveryStatus.pending if status is RunStatus.paused else DeliveryStatus.cancelled
        )
        release_claim(session, chunk, claim, released)
        session.commit()
        return True

    def _count(self, session: Session, outcome: Outcome, counts: dict[str, int]) -> None:
        """Count one message's outcome; suppress a hard-bounced address (in the thread
        that owns the session)."""
        counts[outcome.status] += 1  # (a StrEnum: its value is the key)
        if outcome.hard_bounce is not None:
            email, reason = outcome.hard_bounce
            suppress_address(session, email, "hard-bounce", reason)
            session.commit()

    def _send_batch(
        self, engine: Engine, rows: list[Any], claim: str, compiled: CompiledRun, date: str
    ) -> list[Outcome]:
        """Send claimed rows over one connection and record each outcome as soon as it
        is known (any thread). Each message is built when the mailer takes it, one
        ahead of the results at most (see mailers.send_each)."""
        outcomes: list[Outcome] = []
        handed: dict[int, tuple[Any, str, str]] = {}  # id(message): row, message id, domain

        def messages() -> Iterator[OutgoingMessage]:
            for row in rows:
                prepared = self._prepare(engine, row, claim, compiled, date)
                if isinstance(prepared, Outcome):
                    outcomes.append(prepared)
                    continue
                message, domain = prepared
                handed[id(message)] = (row, message.message_id, domain)
                yield message

        started = time.perf_counter()
        for message, result in self.outgoing.send_many(messages()):
            now = time.perf_counter()
            metrics.observe_send(now - started)
            started = now
            row, message_id, domain = handed.pop(id(message))
            outcomes.append(self._result(engine, row, claim, message_id, domain, result))
        return outcomes

    def _prepare(
        self, engine: Engine, row: Any, claim: str, compiled: CompiledRun, date: str
    ) -> Outcome | tuple[OutgoingMessage, str]:
        """One row's message and domain, or the outcome (recorded) that needs none."""
        if not row.still_subscribed:
            self._record(engine, row, claim, DeliveryStatus.suppressed, "left the list", "")
            return Outcome(DeliveryStatus.suppressed)
        domain = row.email.rpartition("@")[2].lower()
        # Stable for a delivery and attempt (a duplicate after a crash carries the same
        # id, so mail clients can fold it), unique across databases through the salt.
        message_id = f"<nl.{row.id}.{row.attempts + 1}.{compiled.salt}@{self.sender_domain}>"
        paused = self.throttle.paused_for(domain)
        if paused > 0:
            reason = f"domain {domain} asked us to slow down"
            self._defer(engine, row, claim, message_id, reason, paused)
            return Outcome(DeliveryStatus.deferred)
        self.throttle.wait_turn(domain)
        try:
            with self._build_lock:
                return self._build(row, compiled, message_id, date), domain
        except InvalidInputError as exc:
            # This one address or name cannot be put in a message (e.g. it needs
            # SMTPUTF8), or the templates fail for this reader's attributes; the rest
            # of the chunk goes on.
            self._record(engine, row, claim, DeliveryStatus.failed, str(exc), message_id)
            return Outcome(DeliveryStatus.failed)

    def _result(
        self,
        engine: Engine,
        row: Any,
        claim: str,
        message_id: str,
        domain: str,
        result: SendResult | DeliveryError,
    ) -> Outcome:
        """Record what the relay made of one row's message."""
        if isinstance(result, TemporaryDeliveryError):
            if isinstance(result, ThrottledError):
                self.throttle.slow_down(domain, self.settings.domain_backoff_seconds)
            self._defer(engine, row, claim, message_id, str(result), 0.0)
            return Outcome(DeliveryStatus.deferred)
        if isinstance(result, PermanentDeliveryError):
            self._record(engine, row, claim, DeliveryStatus.failed, str(result), message_id)
            if isinstance(result, HardBounceError):
                return Outcome(DeliveryStatus.failed, (row.email, str(result)))
            return Outcome(DeliveryStatus.failed)
        if isinstance(result, DeliveryError):
            raise result
        self._record(engine, row, claim, DeliveryStatus.sent, result.reply, message_id)
        return Outcome(DeliveryStatus.sent)

    def _build(
        self, row: Any, compiled: CompiledRun, message_id: str, date: str
    ) -> OutgoingMessage:
        """One reader's message: slots filled, MIME spliced, DKIM-signed."""
        tracking = compiled.policy.for_recipient(row.list_id, row.no_tracking)
        message = compiled.messages_for(row).pick(tracking)
        values = recipient_values(
            self.settings, self.signer, row, message.attribute_keys, compiled.sequence_id
        )
        values["tracking_note"] = note(tracking, row.no_tracking)
        if message.tracked:
            # One signed value for every link and the pixel of this message: its
            # ledger row (individual) or a random number stored nowhere (anonymous).
            ident = row.id if tracking.individual else new_nonce()
            values[TRACK_KEY] = self.tracking_signer.recipient_part(
                compiled.run_id, tracking.individual, ident, row.list_id, int(time.time())
            )
        recipient = Recipient(
            email=row.email, name=row.name or "", values=values, message_id=message_id
        )
        return self.outgoing.prepare(message.template, recipient, date)

    def _record(
        self,
        engine: Engine,
        row: Any,
        claim: str,
        status: DeliveryStatus,
        reply: str,
        message_id: str,
        next_attempt_at: float | None = None,
    ) -> None:
        now = time.time()
        sent = now if status is DeliveryStatus.sent else None
        line = result_line(
            row.id, claim, status.value, message_id, sent, next_attempt_at, now, reply
        )
        self.journal.write(engine, line)
        # Counted once the result is journalled, where it cannot be lost any more.
        metrics.count_message(status.value)

    def _defer(
        self,
        engine: Engine,
        row: Any,
        claim: str,
        message_id: str,
        reply: str,
        at_least: float,
    ) -> None:
        delay = retry_delay(
            row.attempts + 1, self.settings.retry_base_seconds, self.settings.retry_max_seconds
        )
        seconds = max(delay.total_seconds(), at_least)
        self._record(
            engine, row, claim, DeliveryStatus.deferred, reply, message_id, time.time() + seconds
        )

"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the server offers it,
one at a time when it does not. CHUNKING (RFC 3030): MAIL, RCPT, BDAT and the message
in one write when the server offers both, with DATA's error semantics. A tiny SMTP
server logs every recv() it gets. And dot-stuffing only where a message needs it."""

from __future__ import annotations

import asyncio
import email
import email.utils
import select
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from newsletter.bench.sink import SinkProtocol
from newsletter.config import SmtpTarget
from newsletter.delivery.mailers import (
    MemoryMailer,
    OutgoingMessage,
    SmtpMailer,
    _has_lone_dot_line,
)
from newsletter.delivery.outgoing import Outgoing
from newsletter.delivery.relays import RelayPool
from newsletter.errors import (
    HardBounceError,
    RelayUnavailableError,
    TemporaryDeliveryError,
    ThrottledError,
)
from newsletter.rendering.mime import ListHeaders, MessageTemplate, Recipient
from newsletter.rendering.model import Snapshot
from newsletter.rendering.slots import sentinel
from newsletter.runs.models import DeliveryStatus
from tests.processes import RedisServer
from tests.smtp_sink import SmtpSink, protocol_server
from tests.test_delivery_engine import address, counts
from tests.test_relay_faults import far_settings, run_to_the_end

MESSAGE = OutgoingMessage(
    "news@clinic.example",
    "reader@example.org",
    b"Subject: Clinic hours\r\n\r\nThe clinic opens at 8 on weekdays.\r\n",
    "<hours@clinic.example>",
)


@dataclass
class Transcript:
    """What a recording relay saw: each recv() as it came, each message it accepted,
    its BDAT commands, and its sessions (to hang up on them)."""

    reads: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    bdat: int = 0
    sessions: list[RecordingSmtp] = field(default_factory=list)


class RecordingSmtp(SinkProtocol):
    """The bench's sink, offering PIPELINING and CHUNKING or not, keeping a Transcript."""

    def __init__(self, transcript: Transcript, pipelining: bool, chunking: bool) -> None:
        self.transcript = transcript
        offer = b"250-PIPELINING\r\n" if pipelining else b""
        offer += b"250-CHUNKING\r\n" if chunking else b""
        self.ehlo_reply = b"250-relay.test\r\n" + offer + b"250 8BITMIME\r\n"
        self.hung_up = threading.Event()
        transcript.sessions.append(self)

    def data_received(self, data: bytes) -> None:
        self.transcript.reads.append(data)
        super().data_received(data)

    def message_received(self, message: bytes) -> None:
        self.transcript.messages.append(message)

    def _chunk_started(self, line: bytes) -> bool:
        self.transcript.bdat += 1
        return super()._chunk_started(line)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hung_up.set()

    def hang_up(self) -> None:
        """Close the session from another thread (an idle timeout) and wait till it is."""
        self.loop.call_soon_threadsafe(self.transport.close)
        assert self.hung_up.wait(5)


@contextmanager
def recording_relay(
    pipelining: bool = True, chunking: bool = False, sink: type[RecordingSmtp] = RecordingSmtp
) -> Iterator[tuple[SmtpTarget, Transcript]]:
    transcript = Transcript()
    with protocol_server(lambda: sink(transcript, pipelining, chunking)) as port:
        yield SmtpTarget("127.0.0.1", port), transcript


def envelope_reads(reads: list[bytes]) -> list[bytes]:
    """The reads that carried any of MAIL, RCPT or DATA."""
    verbs = (b"MAIL FROM", b"RCPT TO", b"DATA\r\n")
    return [r for r in reads if any(v in r for v in verbs)]


@pytest.mark.parametrize("messages", [1, 3])
def test_mail_rcpt_and_data_arrive_in_one_read_when_pipelining_is_offered(messages: int) -> None:
    with recording_relay(pipelining=True) as (target, transcript):
        mailer = SmtpMailer(target)
        for _ in range(messages):
            assert mailer.send(MESSAGE).reply.startswith("250")
        mailer.close()
    together = envelope_reads(transcript.reads)
    assert len(together) == messages
    for read in together:
        assert read == (
            b"MAIL FROM:<news@clinic.example>\r\nRCPT TO:<reader@example.org>\r\nDATA\r\n"
        )


@pytest.mark.parametrize("chunking", [False, True])
def test_each_command_waits_for_its_reply_when_pipelining_is_not_offered(chunking: bool) -> None:
    # Without PIPELINING, BDAT would save nothing worth a path of its own: DATA it is.
    with recording_relay(pipelining=False, chunking=chunking) as (target, transcript):
        mailer = SmtpMailer(target)
        assert mailer.send(MESSAGE).reply.startswith("250")
        mailer.close()
    assert transcript.messages == [MESSAGE.data]
    assert envelope_reads(transcript.reads) == [
        b"MAIL FROM:<news@clinic.example>\r\n",
        b"RCPT TO:<reader@example.org>\r\n",
        b"DATA\r\n",
    ]


def test_the_connection_sends_without_nagle_delay() -> None:
    # Each command group and message is one write; with TLS, Nagle's algorithm held
    # each message's last record until the relay's delayed ACK (about 40 ms a message).
    with recording_relay(pipelining=True) as (target, _):
        mailer = SmtpMailer(target)
        mailer.send(MESSAGE)
        assert mailer._smtp is not None and mailer._smtp.sock is not None
        nodelay = mailer._smtp.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        mailer.close()
    assert nodelay != 0


# A line of one "." ends a message in SMTP, so a client doubles every line's leading dot
# (RFC 5321 4.5.2) and the relay takes one off. Messages built from a template have no
# line starting with a dot ("=2E" in quoted-printable) and go as they are; any other
# message is still stuffed. Either way the relay must store exactly what we built.


def dotted_template_message() -> OutgoingMessage:
    marker = "0A1B2C3D4E5F"
    text = f".\n..\n.{sentinel('name', marker)}.\n.Follow-up in two weeks.\n.\n"
    snapshot = Snapshot("Clinic hours", f"<p>{text}</p>", text, {"name": ""}, marker=marker)
    headers = ListHeaders("Riverside Clinic <news@clinic.example>", list_id="news.clinic.example")
    values = {"name": ".Sam", "unsubscribe_url": "https://news.example.org/unsubscribe/a.b"}
    recipient = Recipient("reader@example.org", ".Sam", values, "<dots@clinic.example>")
    return Outgoing("news@clinic.example", MemoryMailer()).prepare(
        MessageTemplate(snapshot, headers), recipient
    )


def test_a_template_message_goes_without_dot_stuffing_and_arrives_exactly() -> None:
    message = dotted_template_message()
    assert message.dot_free
    with recording_relay(pipelining=True) as (target, transcript):
        mailer = SmtpMailer(target)
        assert mailer.send(message).reply.startswith("250")
        mailer.close()
    assert message.data + b".\r\n" in b"".join(transcript.reads)  # byte for byte, nothing doubled
    with SmtpSink() as sink:
        mailer = SmtpMailer(SmtpTarget("127.0.0.1", sink.port))
        mailer.send(message)
        mailer.close()
    [received] = sink.handler.received
    assert received.data == message.data
    text, _ = received.message.iter_parts()
    lines = text.get_content().splitlines()
    assert lines[:5] == [".", "..", "..Sam.", ".Follow-up in two weeks.", "."]


def test_any_other_message_is_dot_stuffed_and_arrives_exactly() -> None:
    body = b"Subject: Dots\r\n\r\n.\r\n..\r\n.leading\r\nend\r\n"
    message = OutgoingMessage("news@clinic.example", "reader@example.org", body, "<d@x>")
    assert not message.dot_free
    with SmtpSink() as sink:
        mailer = SmtpMailer(SmtpTarget("127.0.0.1", sink.port))
        mailer.send(message)
        mailer.close()
    assert [r.data for r in sink.handler.received] == [body]


# CHUNKING (RFC 3030): where the relay offers it with PIPELINING, a message is MAIL,
# RCPT, `BDAT <size> LAST` and its bytes as they are, in one write: one round trip.


def bdat_write(message: OutgoingMessage) -> bytes:
    return (
        f"MAIL FROM:<{message.sender}>\r\nRCPT TO:<{message.recipient}>\r\n".encode()
        + b"BDAT %d LAST\r\n" % len(message.data)
        + message.data
    )


@pytest.mark.parametrize("messages", [1, 3])
def test_envelope_bdat_and_message_arrive_in_one_read_when_chunking_is_offered(
    messages: int,
) -> None:
    with recording_relay(chunking=True) as (target, transcript):
        mailer = SmtpMailer(target)
        for _ in range(messages):
            assert mailer.send(MESSAGE).reply == "250 2.0.0 queued"
        mailer.close()
    assert envelope_reads(transcript.reads) == [bdat_write(MESSAGE)] * messages
    assert transcript.messages == [MESSAGE.data] * messages


def test_bdat_sends_lines_starting_with_a_dot_unstuffed_and_they_arrive_exactly() -> None:
    body = b"Subject: Dots\r\n\r\n..\r\n.leading\r\n. a dot and more\r\nend\r\n"
    message = OutgoingMessage("news@clinic.example", "reader@example.org", body, "<d@x>")
    template_message = dotted_template_message()
    with recording_relay(chunking=True) as (target, transcript):
        mailer = SmtpMailer(target)
        mailer.send(message)
        mailer.send(template_message)
        mailer.close()
    assert envelope_reads(transcript.reads)[0] == bdat_write(message)  # nothing doubled
    assert transcript.bdat == 2
    assert transcript.messages == [body, template_message.data]


def test_a_message_with_a_lone_dot_line_goes_with_data_and_arrives_exactly() -> None:
    # A relay that offers CHUNKING without knowing BDAT would read the chunk as
    # commands; with a lone "." line in it, those could make a message of their own.
    body = b"Subject: Dots\r\n\r\n.\r\nDATA\r\n.leading\r\n"
    message = OutgoingMessage("news@clinic.example", "reader@example.org", body, "<d@x>")
    with recording_relay(chunking=True) as (target, transcript):
        mailer = SmtpMailer(target)
        mailer.send(message)
        mailer.close()
    assert transcript.bdat == 0
    assert transcript.messages == [body]


@pytest.mark.parametrize(
    ("data", "lone"),
    [
        (b"a\r\n.\r\nb", True),
        (b"a\n.\nb", True),  # bare line ends, which some relays take as line ends
        (b"a\r.\rb", True),
        (b"a\r\n.\nb", True),
        (b"a\r\n.", False),  # the end: nothing after it to make a line of
        (b"a\r\n..\r\n.b\r\n. \r\nb.\r\n", False),
    ],
)
def test_lone_dot_lines_are_found_with_any_line_end(data: bytes, lone: bool) -> None:
    assert _has_lone_dot_line(data) is lone


REFUSALS = {
    b"<bounce@example.org>": b"550 5.1.1 <bounce@example.org>: Recipient address rejected\r\n",
    b"<later@example.org>": b"451 4.3.0 <later@example.org>: Temporary lookup failure\r\n",
}


class RefusingRelay(RecordingSmtp):
    """Refuses RCPT as REFUSALS say, and then the message (554), as Postfix does;
    everything else is accepted."""

    def answer(self, command: bytes, reply: bytes) -> bytes:
        if command.upper().startswith((b"MAIL", b"RSET")):
            self.refused = False
        if command.upper().startswith(b"RCPT"):
            refusal = REFUSALS.get(command.partition(b":")[2])
            self.refused = refusal is not None
            return refusal or reply
        if command == b"." and self.refused:
            return b"554 5.5.1 Error: no valid recipients\r\n"
        return reply


@pytest.mark.parametrize(
    ("recipient", "error"),
    [("bounce@example.org", HardBounceError), ("later@example.org", TemporaryDeliveryError)],
)
def test_a_refused_rcpt_is_classified_by_its_reply_and_the_session_goes_on(
    recipient: str, error: type[Exception]
) -> None:
    refused = OutgoingMessage(MESSAGE.sender, recipient, MESSAGE.data, "<r@x>")
    with recording_relay(chunking=True, sink=RefusingRelay) as (target, transcript):
        mailer = SmtpMailer(target)
        with pytest.raises(error) as caught:
            mailer.send(refused)
        assert mailer.connected
        assert mailer.send(MESSAGE).reply == "250 2.0.0 queued"
        mailer.close()
    assert type(caught.value) is error  # a 451 is no throttling: not ThrottledError
    assert caught.value.code == int(REFUSALS[f"<{recipient}>".encode()][:3])
    assert len(transcript.sessions) == 1  # the same session took the next message
    assert transcript.bdat == 2
    assert transcript.messages == [MESSAGE.data]


class ClosingRelay(RecordingSmtp):
    """Answers 421 to MAIL and hangs up (a relay shutting down)."""

    def answer(self, command: bytes, reply: bytes) -> bytes:
        if command.upper().startswith(b"MAIL"):
            self.transport.write(b"421 4.3.2 Service shutting down\r\n")
            self.transport.close()
            return b""
        return reply

    def message_received(self, message: bytes) -> None:
        if not self.transport.is_closing():  # (the sink parses what it already read)
            super().message_received(message)


def test_a_421_to_mail_drops_the_session() -> None:
    with recording_relay(chunking=True, sink=ClosingRelay) as (target, transcript):
        mailer = SmtpMailer(target)
        with pytest.raises(ThrottledError) as caught:
            mailer.send(MESSAGE)
        assert not mailer.connected
    assert caught.value.code == 421
    assert transcript.messages == []


class DroppingAfterChunk(RecordingSmtp):
    """Takes each message, then hangs up before answering the second."""

    def message_received(self, message: bytes) -> None:
        super().message_received(message)
        if len(self.transcript.messages) == 2:
            self.transport.abort()  # the 250 is never written


def test_a_connection_dropped_after_the_chunk_is_deferred_not_sent_again() -> None:
    # The relay has the message though its 250 never came: trying it again at once on
    # another connection would send it twice, so it is deferred (the ledger decides).
    with recording_relay(chunking=True, sink=DroppingAfterChunk) as (target, transcript):
        pool = RelayPool([target], connections=2)
        try:
            pool.send(MESSAGE)
            with pytest.raises(TemporaryDeliveryError) as caught:
                pool.send(MESSAGE)
        finally:
            pool.close()
    assert not isinstance(caught.value, RelayUnavailableError)
    assert transcript.bdat == 2  # not tried again on a new connection
    assert transcript.messages == [MESSAGE.data] * 2


def test_a_kept_session_the_relay_closed_while_idle_is_retried_at_once() -> None:
    # Nothing of the next message is written to a session the relay has hung up on
    # (an idle timeout): it is "stale", and the pool sends it at once on another.
    with recording_relay(chunking=True) as (target, transcript):
        mailer = SmtpMailer(target)
        mailer.send(MESSAGE)
        transcript.sessions[0].hang_up()
        assert mailer._smtp is not None and mailer._smtp.sock is not None
        assert select.select([mailer._smtp.sock], [], [], 5)[0]  # its FIN has come
        with pytest.raises(RelayUnavailableError) as caught:
            mailer.send(MESSAGE)
        assert caught.value.kind == "stale"
        assert mailer.send(MESSAGE).reply == "250 2.0.0 queued"  # on a new session
        mailer.close()
    assert len(transcript.sessions) == 2
    assert transcript.bdat == 2
    assert transcript.messages == [MESSAGE.data] * 2


class NoBdatRelay(RecordingSmtp):
    """Offers CHUNKING but knows no BDAT: answers it 500 and reads the chunk as
    commands (500 to each line), as a server without CHUNKING does."""

    def _chunk_started(self, line: bytes) -> bool:
        self.transcript.bdat += 1
        self.transport.write(b"500 5.5.2 Error: command not recognized\r\n")
        return True

    def answer(self, command: bytes, reply: bytes) -> bytes:
        known = (b"MAIL", b"RCPT", b"RSET", b"NOOP", b".")
        return reply if command.upper().startswith(known) else b"500 5.5.2 Error\r\n"


def test_a_relay_answering_bdat_500_gets_the_message_with_data_from_then_on() -> None:
    with recording_relay(chunking=True, sink=NoBdatRelay) as (target, transcript):
        mailer = SmtpMailer(target)
        assert mailer.send(MESSAGE).reply == "250 2.0.0 queued"
        assert mailer.send(MESSAGE).reply == "250 2.0.0 queued"
        mailer.close()
    assert transcript.bdat == 1  # once, on the first session
    assert len(transcript.sessions) == 2  # that one dropped, being out of step
    assert transcript.messages == [MESSAGE.data] * 2
    data = [r for r in envelope_reads(transcript.reads) if r.endswith(b"DATA\r\n")]
    assert len(data) == 2


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_run_to_a_relay_offering_chunking_reaches_everyone_once_by_bdat(
    pg_url: str, redis_server: RedisServer
) -> None:
    readers = 400
    with recording_relay(chunking=True) as (target, transcript):
        url = f"smtp://{target.host}:{target.port}"
        settings = far_settings(pg_url, redis_server, url, smtp_connections=4)
        campaign_id = run_to_the_end(settings, readers)
    to = Counter(
        email.utils.parseaddr(email.message_from_bytes(m)["To"])[1] for m in transcript.messages
    )
    assert to == Counter({address(i): 1 for i in range(readers)})
    assert transcript.bdat == readers
    assert counts(campaign_id) == {DeliveryStatus.sent: readers}


def reader(number: int, data: bytes = MESSAGE.data) -> OutgoingMessage:
    return OutgoingMessage(MESSAGE.sender, f"r{number}@example.org", data, f"<{number}@x>")


def test_a_messages_end_and_the_next_envelope_go_in_one_write_over_data() -> None:
    messages = [reader(n) for n in range(4)]
    with recording_relay(pipelining=True) as (target, transcript):
        mailer = SmtpMailer(target)
        results = [(m.recipient, r) for m, r in mailer.send_many(messages)]
        mailer.close()
    assert [(rcpt, getattr(r, "reply", r)) for rcpt, r in results] == [
        (m.recipient, "250 2.0.0 queued") for m in messages
    ]
    assert transcript.messages == [MESSAGE.data] * 4
    together = envelope_reads(transcript.reads)
    assert together[0].startswith(b"MAIL FROM")  # the first envelope goes alone
    for read, following in zip(together[1:], messages[1:], strict=True):
        # The end of the message before and this one's MAIL, RCPT and DATA, one segment.
        assert read.endswith(
            b"\r\n.\r\nMAIL FROM:<news@clinic.example>\r\n"
            + f"RCPT TO:<{following.recipient}>\r\nDATA\r\n".encode()
        )


def test_without_pipelining_each_message_has_its_own_envelope_writes() -> None:
    with recording_relay(pipelining=False) as (target, transcript):
        mailer = SmtpMailer(target)
        assert all(
            not isinstance(r, Exception) for _, r in mailer.send_many(reader(n) for n in range(3))
        )
        mailer.close()
    assert transcript.messages == [MESSAGE.data] * 3
    assert not any(b".\r\nMAIL" in read for read in transcript.reads)


def test_a_refusal_ahead_fails_that_reader_alone_and_the_session_goes_on() -> None:
    # bounce@ is refused (550) in the envelope that went with the message before; the
    # reader before and after are delivered on the same session.
    refused = OutgoingMessage(MESSAGE.sender, "bounce@example.org", MESSAGE.data, "<b@x>")
    messages = [reader(1), refused, reader(2), reader(3)]
    with recording_relay(sink=RefusingRelay) as (target, transcript):
        mailer = SmtpMailer(target)
        results = {m.recipient: r for m, r in mailer.send_many(messages)}
        mailer.close()
    assert isinstance(results["bounce@example.org"], HardBounceError)
    assert all(results[f"r{n}@example.org"].reply.startswith("250") for n in (1, 2, 3))
    assert transcript.messages == [MESSAGE.data] * 3
    assert len(transcript.sessions) == 1


class DroppingAfterSecond(RecordingSmtp):
    """Answers the second message's end, then hangs up before the next envelope's
    replies: the next reader was not handed over."""

    def _message_ended(self, message: bytes) -> None:
        super()._message_ended(message)  # (its 250 written)
        if len(self.transcript.messages) == 2:
            self.buffer = b""  # the next envelope, never answered
            self.transport.close()


def test_a_session_lost_after_a_messages_250_sends_the_next_on_a_new_one() -> None:
    messages = [reader(n) for n in range(4)]
    with recording_relay(sink=DroppingAfterSecond) as (target, transcript):
        pool = RelayPool([target], connections=1)
        try:
            results = list(pool.send_many(messages))
        finally:
            pool.close()
    assert [m.recipient for m, _ in results] == [m.recipient for m in messages]
    assert all(not isinstance(r, Exception) for _, r in results), results
    assert len(transcript.sessions) == 2
    # Everyone once: the reader whose envelope went ahead on the lost session had
    # not been handed over, so it went again, whole, on the new one.
    assert len(transcript.messages) == 4


def test_a_caller_that_stops_early_leaves_no_session_waiting_for_text() -> None:
    with recording_relay() as (target, transcript):
        mailer = SmtpMailer(target)
        handed = mailer.send_many(reader(n) for n in range(3))
        assert next(handed)[1].reply.startswith("250")  # the second's envelope went ahead
        handed.close()
        assert not mailer.connected  # in the second's DATA phase: dropped, not reused
        assert mailer.send(reader(9)).reply.startswith("250")  # on a new session
        mailer.close()
    assert transcript.messages == [MESSAGE.data] * 2

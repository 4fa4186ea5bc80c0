"""PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the server offers it,
one at a time when it does not. A tiny SMTP server logs every recv() it gets. And
dot-stuffing only where a message needs it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from newsletter.bench.sink import SinkProtocol
from newsletter.config import SmtpTarget
from newsletter.delivery.mailers import MemoryMailer, OutgoingMessage, SmtpMailer
from newsletter.delivery.outgoing import Outgoing
from newsletter.rendering.mime import ListHeaders, MessageTemplate, Recipient
from newsletter.rendering.model import Snapshot
from newsletter.rendering.slots import sentinel
from tests.smtp_sink import SmtpSink, free_port

MESSAGE = OutgoingMessage(
    "news@clinic.example",
    "reader@example.org",
    b"Subject: Clinic hours\r\n\r\nThe clinic opens at 8 on weekdays.\r\n",
    "<hours@clinic.example>",
)


class RecordingSmtp(SinkProtocol):
    """The bench's sink, offering PIPELINING or not, keeping each chunk of bytes as one
    read delivered it."""

    def __init__(self, reads: list[bytes], pipelining: bool) -> None:
        self.reads = reads
        offer = b"250-PIPELINING\r\n" if pipelining else b""
        self.ehlo_reply = b"250-relay.test\r\n" + offer + b"250 8BITMIME\r\n"

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)
        super().data_received(data)


@contextmanager
def recording_relay(pipelining: bool) -> Iterator[tuple[SmtpTarget, list[bytes]]]:
    reads: list[bytes] = []
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(lambda: RecordingSmtp(reads, pipelining), "127.0.0.1", port)
        )
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield SmtpTarget("127.0.0.1", port), reads
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def envelope_reads(reads: list[bytes]) -> list[bytes]:
    """The reads that carried any of MAIL, RCPT or DATA."""
    verbs = (b"MAIL FROM", b"RCPT TO", b"DATA\r\n")
    return [r for r in reads if any(v in r for v in verbs)]


@pytest.mark.parametrize("messages", [1, 3])
def test_mail_rcpt_and_data_arrive_in_one_read_when_pipelining_is_offered(messages: int) -> None:
    with recording_relay(pipelining=True) as (target, reads):
        mailer = SmtpMailer(target)
        for _ in range(messages):
            assert mailer.send(MESSAGE).reply.startswith("250")
        mailer.close()
    together = envelope_reads(reads)
    assert len(together) == messages
    for read in together:
        assert read == (
            b"MAIL FROM:<news@clinic.example>\r\nRCPT TO:<reader@example.org>\r\nDATA\r\n"
        )


def test_each_command_waits_for_its_reply_when_pipelining_is_not_offered() -> None:
    with recording_relay(pipelining=False) as (target, reads):
        mailer = SmtpMailer(target)
        assert mailer.send(MESSAGE).reply.startswith("250")
        mailer.close()
    assert envelope_reads(reads) == [
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
    with recording_relay(pipelining=True) as (target, reads):
        mailer = SmtpMailer(target)
        assert mailer.send(message).reply.startswith("250")
        mailer.close()
    assert message.data + b".\r\n" in b"".join(reads)  # byte for byte, nothing doubled
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

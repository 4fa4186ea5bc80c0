"""The SMTP client bench (newsletter/bench/clients.py): every client it measures must
deliver every message intact, and the bench's sink must take BDAT (RFC 3030) as
written, or the figures mean nothing. The sink here is the bench's own Python sink,
in-process, keeping what it receives."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from newsletter.bench.clients import (
    bench_message,
    measure,
    send_with_asyncio,
    send_with_threads,
    table,
)
from newsletter.bench.sink import EHLO_REPLY, SinkProtocol
from newsletter.delivery.mailers import OutgoingMessage
from newsletter.errors import NewsletterError
from tests.smtp_sink import protocol_server

# Lines that DATA must dot-stuff (the first one too), and one that looks like the end.
DOTTED = (
    b".starts with a dot\r\nSubject: Dots\r\n\r\n.\r\n..two\r\n.hidden\r\n"
    + bench_message(3000).data
    + b"\r\n.\r\nafter the lone dot\r\n"
)
MESSAGE = OutgoingMessage("news@clinic.example", "reader@example.org", DOTTED, "<d@x>")


class KeepingSink(SinkProtocol):
    def __init__(self, kept: list[bytes], ehlo_reply: bytes) -> None:
        self.kept = kept
        self.ehlo_reply = ehlo_reply

    def message_received(self, message: bytes) -> None:
        self.kept.append(message)


@contextmanager
def keeping_sink(
    ehlo_reply: bytes = EHLO_REPLY, sink: type[KeepingSink] = KeepingSink
) -> Iterator[tuple[str, list[bytes]]]:
    """The bench's sink on a free port, in a thread; yields its URL and the messages."""
    kept: list[bytes] = []
    with protocol_server(lambda: sink(kept, ehlo_reply)) as port:
        yield f"smtp://127.0.0.1:{port}", kept


CLIENTS = {
    "threads": send_with_threads,
    "asyncio-data": send_with_asyncio,
    "asyncio-bdat": lambda *args: send_with_asyncio(*args, bdat=True),
}


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_every_client_delivers_every_message_intact(client: str, connections: int) -> None:
    with keeping_sink() as (url, kept):
        measured = CLIENTS[client](url, MESSAGE, 300, connections)
    assert measured.messages == 300
    assert measured.cpu_seconds > 0
    assert len(kept) == 300
    assert {len(m) for m in kept} == {len(DOTTED)}
    assert all(m == DOTTED for m in kept)


@pytest.mark.parametrize("bdat", [False, True])
def test_the_asyncio_client_delivers_intact_without_pipelining(bdat: bool) -> None:
    one_at_a_time = EHLO_REPLY.replace(b"250-PIPELINING\r\n", b"")
    with keeping_sink(one_at_a_time) as (url, kept):
        send_with_asyncio(url, MESSAGE, 20, 2, bdat=bdat)
    assert kept == [DOTTED] * 20


def test_bdat_is_refused_by_name_where_chunking_is_not_offered() -> None:
    without = EHLO_REPLY.replace(b"250-CHUNKING\r\n", b"")
    with keeping_sink(without) as (url, kept), pytest.raises(NewsletterError, match="CHUNKING"):
        send_with_asyncio(url, MESSAGE, 3, 1, bdat=True)
    assert kept == []


class FullMailbox(KeepingSink):
    """Answers 452 to the first MAIL and hangs up."""

    def data_received(self, data: bytes) -> None:
        if b"MAIL FROM" in data:
            self.transport.write(b"452 4.3.1 mailbox full\r\n")
            self.transport.close()
            return
        super().data_received(data)


@pytest.mark.parametrize("bdat", [False, True])
def test_a_client_stops_at_a_refusal_and_says_what_was_refused(bdat: bool) -> None:
    with (
        keeping_sink(sink=FullMailbox) as (url, kept),
        pytest.raises(
            NewsletterError, match=re.escape("MAIL FROM was answered b'452 4.3.1 mailbox full'")
        ),
    ):
        send_with_asyncio(url, MESSAGE, 5, 1, bdat=bdat)
    assert kept == []


EHLO_LINES = 1 + EHLO_REPLY.count(b"\r\n")  # with the greeting


@contextmanager
def talking_to_sink() -> Iterator[tuple[socket.socket, list[bytes]]]:
    with keeping_sink() as (url, kept):
        port = urlsplit(url).port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port)) as sock:
            yield sock, kept


def _talk(sock: socket.socket, data: bytes, replies: int) -> list[bytes]:
    """Send `data`, read `replies` reply lines."""
    sock.sendall(data)
    lines: list[bytes] = []
    buffer = b""
    while len(lines) < replies:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\r\n")
        lines += complete
    return lines


def test_the_sink_takes_a_message_in_bdat_chunks_byte_for_byte() -> None:
    first, last = b"Subject: x\r\n\r\n.\r\n", b"the rest, no dot-stuffing\r\n"
    with talking_to_sink() as (s, kept):
        greeting_and_ehlo = _talk(s, b"EHLO client\r\n", EHLO_LINES)
        assert b"250-CHUNKING" in greeting_and_ehlo
        envelope = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
        # The first chunk's bytes come in two writes; the last chunk is pipelined.
        assert _talk(s, envelope + b"BDAT %d\r\n" % len(first) + first[:5], 2) == [
            b"250 OK",
            b"250 OK",
        ]
        replies = _talk(s, first[5:] + b"BDAT %d LAST\r\n" % len(last) + last, 2)
        assert replies == [b"250 2.0.0 chunk received", b"250 2.0.0 queued"]
        assert _talk(s, envelope + b"BDAT 0 LAST\r\n", 3)[-1] == b"250 2.0.0 queued"
    assert kept == [first + last, b""]


def test_the_sink_hangs_up_on_bdat_without_a_size() -> None:
    with talking_to_sink() as (s, kept):
        _talk(s, b"EHLO client\r\n", EHLO_LINES)
        assert _talk(s, b"BDAT some LAST\r\n", 1) == [b"501 5.5.4 Syntax: BDAT size [LAST]"]
        assert s.recv(100) == b""
    assert kept == []


def test_measure_gives_each_client_a_row_of_every_run() -> None:
    rows = measure(bench_message(), 40, 2, repeats=2)
    assert [r.client for r in rows][:4] == [
        "threads + smtplib (production)",
        "asyncio DATA",
        "asyncio DATA",
        "asyncio BDAT",
    ]
    assert all(len(r.cpu_us) == len(r.rate) == 2 and r.messages == 40 for r in rows)
    assert "asyncio BDAT" in table(rows)

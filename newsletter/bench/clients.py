"""Which SMTP client costs the sending side least CPU per message (issue 14)?

Sends M copies of the bench's message (27 KB) over N kept connections to a local sink,
optionally through the bench's delay proxy, with:

- threads + smtplib (production): the relay pool the workers use (`RelayPool` over
  `SmtpMailer`: smtplib, our PIPELINING of MAIL/RCPT/DATA in one write, TCP_NODELAY),
  driven by N threads taking a few messages at a time, as `sending.py` does; against
  `smtp-sink`, which does not offer CHUNKING, so with DATA;
- threads + smtplib BDAT: the same against our Python sink, which offers CHUNKING, so
  `SmtpMailer` sends MAIL/RCPT/`BDAT size LAST` and the message in one write;
- asyncio DATA: a minimal client on asyncio streams written here: EHLO once per
  connection, then per message MAIL/RCPT/DATA in one write (PIPELINING), the dot-stuffed
  message and "."; N connections as N tasks of one event loop;
- asyncio BDAT: the same, with `BDAT <size> LAST` and the message instead of DATA
  (RFC 3030 CHUNKING, no dot-stuffing); pipelined with MAIL and RCPT, so a message is
  one write and one round trip, not two;
- the two asyncio clients on uvloop too, when it is installed (it is not a dependency).

The figure is the client's CPU per message: `time.process_time` of this process over
the sending part (connections opened, messages sent; not their QUIT) over M, and the
part of it in user space (the rest is the kernel's: on loopback, a send also runs much
of the receiving side's TCP processing). The sink runs in a process of its own:
Postfix's `smtp-sink` when installed (it does not offer CHUNKING), and our Python sink
(newsletter/bench/sink.py, which does) for BDAT and for the DATA client beside it. Each
run is repeated (3 times by default) and the clients take turns, so load from elsewhere
on the machine falls on all of them alike.

Run: `python -m newsletter.bench.clients [--messages 20000] [--connections 1 25]
[--latency-ms 20] [--repeats 3]`; prints a table (or JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from newsletter.bench import _free_port, delay_proxy, local_sink
from newsletter.bench.tls import MESSAGE_BYTES
from newsletter.config import SmtpTarget
from newsletter.delivery.mailers import OutgoingMessage
from newsletter.delivery.relays import RelayPool
from newsletter.delivery.sending import BATCH_ROWS
from newsletter.errors import NewsletterError

UVLOOP = importlib.util.find_spec("uvloop") is not None


def bench_message(size: int = MESSAGE_BYTES) -> OutgoingMessage:
    """A plain-text message of about `size` bytes, CRLF line ends, no line starting with
    a dot, and marked so (`dot_free`), as the workers' messages are."""
    head = (
        b"From: Clinic news <news@clinic.example>\r\nTo: reader@example.org\r\n"
        b"Subject: Clinic hours\r\nMessage-ID: <bench@clinic.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    line = b"The clinic opens at 8 on weekdays and at 10 on Saturdays; call ahead." + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    data = head + body
    return OutgoingMessage("news@clinic.example", "reader@example.org", data, "<b@x>", True)


@dataclass(frozen=True)
class Measured:
    """One run of one client."""

    messages: int
    cpu_seconds: float  # user and system
    user_seconds: float  # of it, in user space (the rest: system calls, the TCP stack)
    wall_seconds: float

    @classmethod
    def since(cls, messages: int, start: tuple[float, float, float]) -> Measured:
        cpu, user, wall = (now - then for now, then in zip(_clocks(), start, strict=True))
        return cls(messages, cpu, user, wall)

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu_seconds / self.messages * 1e6

    @property
    def user_us_per_message(self) -> float:
        return self.user_seconds / self.messages * 1e6

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.wall_seconds


def _clocks() -> tuple[float, float, float]:
    """This process's CPU seconds, of them in user space, and wall seconds, so far."""
    user = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    return time.process_time(), user, time.perf_counter()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise NewsletterError(f"not an smtp://host:port address: {url!r}")
    return parts.hostname, parts.port


# --- (a) the production client: the relay pool on threads -------------------------


def send_with_threads(url: str, message: OutgoingMessage, count: int, connections: int) -> Measured:
    """`count` messages through a `RelayPool` of `connections` connections, from as many
    threads, each taking up to BATCH_ROWS messages at a time (as a chunk's rows)."""
    host, port = _address(url)
    pool = RelayPool([SmtpTarget(host, port)], connections)
    batches = [min(BATCH_ROWS, count - i) for i in range(0, count, BATCH_ROWS)]

    def send_batch(size: int) -> int:
        return sum(pool.send(message).reply.startswith("250") for _ in range(size))

    threads = ThreadPoolExecutor(connections, thread_name_prefix="smtp")
    try:
        start = _clocks()
        sent = sum(threads.map(send_batch, batches))
        measured = Measured.since(count, start)
    finally:
        threads.shutdown()
        pool.close()
    if sent != count:
        raise NewsletterError(f"the relay pool sent {sent} of {count} messages")
    return measured


# --- (b, c) a minimal client on asyncio ----------------------------------------------


def dot_stuffed(message: OutgoingMessage) -> bytes:
    """The message as DATA carries it: a dot doubled at the start of each line (RFC
    5321 4.5.2) unless it has none (`dot_free`), ending in CRLF, then the final "."."""
    body = message.data
    if not message.dot_free:
        body = body.replace(b"\n.", b"\n..")
        if body.startswith(b"."):
            body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class SmtpSession:
    """One SMTP connection on asyncio streams, EHLO done; `send` hands over a message
    and raises NewsletterError on any reply but the expected one (a bench needs no
    recovery: the session is then given up)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pipelining = self.chunking = False

    @classmethod
    async def open(cls, host: str, port: int) -> SmtpSession:
        reader, writer = await asyncio.open_connection(host, port)
        # Each message goes in one write: Nagle's algorithm would only hold it back.
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = cls(reader, writer)
        await session._expect(220, "the greeting")
        writer.write(b"EHLO bench.example\r\n")
        lines = await session._expect(250, "EHLO")
        offers = {line[4:].split(b" ")[0].upper() for line in lines[1:]}
        session.pipelining, session.chunking = b"PIPELINING" in offers, b"CHUNKING" in offers
        return session

    async def _reply(self) -> tuple[int, list[bytes]]:
        lines: list[bytes] = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise NewsletterError("the server closed the connection")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        code = lines[-1][:3]
        if not code.isdigit():
            raise NewsletterError(f"not an SMTP reply: {lines[-1]!r}")
        return int(code), lines

    async def _expect(self, code: int, what: str) -> list[bytes]:
        got, lines = await self._reply()
        if got != code:
            raise NewsletterError(f"{what} was answered {lines[-1]!r}, not {code}")
        return lines

    async def send(self, message: OutgoingMessage, bdat: bool = False) -> None:
        """MAIL, RCPT and DATA in one write (with PIPELINING), then the message; with
        `bdat`, MAIL, RCPT, `BDAT size LAST` and the message in one write."""
        envelope = [
            f"MAIL FROM:<{message.sender}>\r\n".encode("ascii"),
            f"RCPT TO:<{message.recipient}>\r\n".encode("ascii"),
        ]
        if bdat and not self.chunking:
            raise NewsletterError("the server does not offer CHUNKING (BDAT)")
        last = b"BDAT %d LAST\r\n" % len(message.data) if bdat else b"DATA\r\n"
        commands = [*envelope, last]
        if not self.pipelining:
            for command in commands[:-1]:
                self.writer.write(command)
                await self._expect(250, command.split(b":")[0].decode())
            commands = commands[-1:]
        if bdat:
            self.writer.write(b"".join([*commands, message.data]))
        else:
            self.writer.write(b"".join(commands))
        for command in commands[:-1]:
            await self._expect(250, command.split(b":")[0].decode())
        if bdat:
            await self._expect(250, "BDAT")
            return
        await self._expect(354, "DATA")
        self.writer.write(dot_stuffed(message))
        await self._expect(250, "the message")

    async def close(self) -> None:
        self.writer.write(b"QUIT\r\n")
        await self._expect(221, "QUIT")
        self.writer.close()
        await self.writer.wait_closed()


async def _send_concurrently(
    url: str, message: OutgoingMessage, count: int, connections: int, bdat: bool
) -> Measured:
    host, port = _address(url)
    left = iter(range(count))  # each connection takes the next message when free

    async def connection() -> tuple[SmtpSession, int]:
        session = await SmtpSession.open(host, port)
        sent = 0
        for _ in left:
            await session.send(message, bdat)
            sent += 1
        return session, sent

    start = _clocks()
    done = await asyncio.gather(*(connection() for _ in range(connections)))
    measured = Measured.since(count, start)
    await asyncio.gather(*(session.close() for session, _ in done))
    sent = sum(n for _, n in done)
    if sent != count:
        raise NewsletterError(f"the asyncio client sent {sent} of {count} messages")
    return measured


def _run(coroutine: Coroutine[Any, Any, Measured], uvloop: bool) -> Measured:
    if not uvloop:
        return asyncio.run(coroutine)
    factory = importlib.import_module("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def send_with_asyncio(
    url: str,
    message: OutgoingMessage,
    count: int,
    connections: int,
    bdat: bool = False,
    uvloop: bool = False,
) -> Measured:
    """`count` messages over `connections` connections, as many tasks of one event loop
    (uvloop's with `uvloop`); with `bdat`, BDAT instead of DATA."""
    return _run(_send_concurrently(url, message, count, connections, bdat), uvloop)


# --- the runs ------------------------------------------------------------------------

Send = Callable[[str, OutgoingMessage, int, int], Measured]


@dataclass(frozen=True)
class Client:
    name: str
    send: Send
    chunking: bool = False  # needs a sink that offers CHUNKING


def clients() -> list[Client]:
    found = [
        Client("threads + smtplib (production)", send_with_threads),
        Client("asyncio DATA", send_with_asyncio),
        Client("asyncio DATA", send_with_asyncio, chunking=True),  # beside BDAT, same sink
        Client("asyncio BDAT", partial(send_with_asyncio, bdat=True), chunking=True),
        Client("threads + smtplib BDAT", send_with_threads, chunking=True),
    ]
    if UVLOOP:
        found += [
            Client("uvloop DATA", partial(send_with_asyncio, uvloop=True)),
            Client("uvloop BDAT", partial(send_with_asyncio, bdat=True, uvloop=True), True),
        ]
    return found


@dataclass(frozen=True)
class Row:
    """A client's repeated runs in one setting."""

    client: str
    sink: str
    connections: int
    latency_ms: float
    messages: int
    cpu_us: list[float]  # per message, each run
    user_us: list[float]  # of it, in user space
    rate: list[float]  # messages/s, each run

    @property
    def cpu_us_median(self) -> float:
        return statistics.median(self.cpu_us)

    @property
    def rate_median(self) -> float:
        return statistics.median(self.rate)


@contextmanager
def chunking_sink() -> Iterator[tuple[str, str]]:
    """Our Python sink (it offers CHUNKING) in a process of its own."""
    port = _free_port()
    command = [sys.executable, "-m", "newsletter.bench.sink", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise NewsletterError("the Python sink did not start")
        yield f"smtp://127.0.0.1:{port}", "python sink (CHUNKING)"
    finally:
        process.terminate()
        process.communicate(timeout=10)


@contextmanager
def _far(url: str, latency_ms: float) -> Iterator[str]:
    if not latency_ms:
        yield url
        return
    with delay_proxy(url, latency_ms) as (proxied, _counts):
        yield proxied


def measure(
    message: OutgoingMessage,
    count: int,
    connections: int,
    latency_ms: float = 0.0,
    repeats: int = 3,
    chosen: list[Client] | None = None,
) -> list[Row]:
    """Each client `repeats` times, taking turns, in one setting."""
    chosen = clients() if chosen is None else chosen
    with ExitStack() as stack:
        plain_url, plain_name = stack.enter_context(local_sink())
        if any(c.chunking for c in chosen):
            chunk_url, chunk_name = stack.enter_context(chunking_sink())
        else:
            chunk_url, chunk_name = "", ""
        plain = stack.enter_context(_far(plain_url, latency_ms))
        chunk = stack.enter_context(_far(chunk_url, latency_ms) if chunk_url else nullcontext(""))
        runs: list[list[Measured]] = [[] for _ in chosen]
        for _ in range(repeats):
            for client, measured in zip(chosen, runs, strict=True):
                url = chunk if client.chunking else plain
                measured.append(client.send(url, message, count, connections))
    return [
        Row(
            client.name,
            chunk_name if client.chunking else plain_name,
            connections,
            latency_ms,
            count,
            [round(m.cpu_us_per_message, 1) for m in measured],
            [round(m.user_us_per_message, 1) for m in measured],
            [round(m.messages_per_second, 1) for m in measured],
        )
        for client, measured in zip(chosen, runs, strict=True)
    ]


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width table: medians and [least, most] of the runs (user:
    the median CPU in user space)."""
    head = (
        f"{'client':<31} {'sink':<22} {'conn':>4} {'ms':>3} {'msgs':>6} "
        f"{'CPU µs/msg median [range]':>27} {'user':>5} {'msg/s median [range]':>25}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cpu = f"{r.cpu_us_median:.0f} [{min(r.cpu_us):.0f}-{max(r.cpu_us):.0f}]"
        rate = f"{r.rate_median:,.0f} [{min(r.rate):,.0f}-{max(r.rate):,.0f}]"
        lines.append(
            f"{r.client:<31} {r.sink[:22]:<22} {r.connections:>4} {r.latency_ms:>3g} "
            f"{r.messages:>6} {cpu:>27} {statistics.median(r.user_us):>5.0f} {rate:>25}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m newsletter.bench.clients")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object a row")
    args = parser.parse_args(argv)
    message = bench_message()
    rows = [
        row
        for n in args.connections
        for row in measure(message, args.messages, n, args.latency_ms, args.repeats)
    ]
    if args.json:
        for row in rows:
            print(json.dumps({**asdict(row), "message_bytes": len(message.data)}))
    else:
        print(f"{len(message.data):,}-byte messages; uvloop {'on' if UVLOOP else 'not installed'}")
        print(table(rows))


if __name__ == "__main__":
    main()

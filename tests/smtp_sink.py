"""A real SMTP server for tests (aiosmtpd, in-process) that can answer 4xx/5xx on demand."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

DROP = "DROP"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def protocol_server(factory: Callable[[], asyncio.Protocol]) -> Iterator[int]:
    """A server of `factory`'s protocol (the bench's sink, say) on a free port of
    127.0.0.1, its event loop in a thread of its own; yields the port."""
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", port))
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@dataclass
class Received:
    recipient: str
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkHandler:
    """Stores accepted messages. `rcpt_reply(address)` may return e.g. '550 no such user'."""

    received: list[Received] = field(default_factory=list)
    rcpt_reply: Callable[[str], str | None] = lambda address: None
    # Return a reply such as "451 try later", or DROP to cut the connection mid-DATA.
    data_reply: Callable[[list[str]], str | None] = lambda rcpts: None
    delay: float = 0.0  # seconds to wait before answering DATA (a slow relay)
    # Say PIPELINING in the EHLO reply: aiosmtpd reads pipelined commands in order but
    # does not offer them, so clients would otherwise wait for each reply.
    pipelining: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # (the hook's to do)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.data_reply(list(envelope.rcpt_tos))
        if reply == DROP:
            server.transport.close()
            return "421 connection dropped"
        if reply:
            return reply
        data = envelope.original_content or b""
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(rcpt, data))
        return "250 Message accepted"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r.recipient for r in self.received]

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@dataclass
class ConnectionTally:
    """Sessions a sink has open now, at most, and in all; past `cap` (when set) a new
    connection gets "421 too many connections" and is closed, as providers do."""

    cap: int = 0
    open: int = 0
    most: int = 0
    opened: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> bool:
        with self.lock:
            if self.cap and self.open >= self.cap:
                self.refused += 1
                return False
            self.open += 1
            self.opened += 1
            self.most = max(self.most, self.open)
            return True

    def leave(self) -> None:
        with self.lock:
            self.open -= 1

    def reset(self) -> None:
        with self.lock:
            self.most, self.opened, self.refused = self.open, 0, 0


class TalliedSMTP(SMTP):
    """aiosmtpd's server, counting its sessions in a ConnectionTally."""

    def __init__(self, handler: Any, tally: ConnectionTally, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.tally = tally
        self.counted = False
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.counted:  # (again after STARTTLS: the same session)
            if not self.tally.enter():
                self.refused = True
                assert isinstance(transport, asyncio.Transport)
                transport.write(b"421 4.7.0 Too many connections from you, try later\r\n")
                transport.close()
                return
            self.counted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        if self.counted:
            self.counted = False
            self.tally.leave()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self.refused:
            return False
        return super().eof_received()


class TalliedController(Controller):
    def __init__(self, handler: Any, tally: ConnectionTally, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.tally = tally

    def factory(self) -> SMTP:
        return TalliedSMTP(self.handler, self.tally, **self.SMTP_kwargs)


class SmtpSink:
    def __init__(self, handler: SinkHandler | None = None, cap: int = 0, **controller: Any) -> None:
        self.handler = handler or SinkHandler()
        self.port = free_port()
        self.tally = ConnectionTally(cap)
        self.controller = TalliedController(
            self.handler, self.tally, hostname="127.0.0.1", port=self.port, **controller
        )

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        # The controller's own check that the server is up is no session of ours.
        deadline = time.monotonic() + 5
        while self.tally.open and time.monotonic() < deadline:
            time.sleep(0.01)
        self.tally.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

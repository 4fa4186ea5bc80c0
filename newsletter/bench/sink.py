"""A minimal, fast SMTP sink for benchmarks: accepts everything, stores nothing.

aiosmtpd tops out near 1,500 messages/s here; this answers each command with one
write and scans DATA for the terminator without parsing, so the client, not the sink,
is what the benchmark measures. Postfix's `smtp-sink` (C) is faster still and is used
when it is installed; it does not offer CHUNKING, and this sink does (RFC 3030: `BDAT
size [LAST]` and exactly `size` bytes of message after it), so BDAT can be measured.
Run: `python -m newsletter.bench.sink PORT`.
"""

from __future__ import annotations

import asyncio
import signal
import sys

EHLO_REPLY = b"250-sink\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"


class SinkProtocol(asyncio.Protocol):
    received = 0
    ehlo_reply = EHLO_REPLY  # what it offers (a test's relay offers less)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.in_data = False
        self.chunk_left = 0  # bytes of a BDAT chunk still to come
        self.last_chunk = False
        self.content: list[bytes] = []  # the message so far
        transport.write(b"220 sink ESMTP\r\n")

    def message_received(self, message: bytes) -> None:
        """Each message as sent (dot-stuffing undone); the sink keeps nothing."""

    def answer(self, command: bytes, reply: bytes) -> bytes:
        """What the sink says to a command line (MAIL, RCPT, RSET…) or to a whole
        message (b"."): `reply`, always a yes (a test's relay may refuse instead)."""
        return reply

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.chunk_left:
                piece = self.buffer[: self.chunk_left]
                self.buffer = self.buffer[len(piece) :]
                self.content.append(piece)
                self.chunk_left -= len(piece)
                if self.chunk_left:
                    return
                self._chunk_ended()
                continue
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    # Keep back only what could hold the start of a split terminator.
                    keep = len(self.buffer) - 4
                    if keep > 0:
                        self.content.append(self.buffer[:keep])
                        self.buffer = self.buffer[keep:]
                    return
                self.content.append(self.buffer[: end + 2])
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                # Every line begins after a CRLF (one was put before the first): a
                # leading dot is the client's stuffing (RFC 5321 4.5.2).
                self._message_ended(b"".join(self.content).replace(b"\r\n.", b"\r\n")[2:])
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            line, self.buffer = self.buffer[:line_end], self.buffer[line_end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.transport.write(self.ehlo_reply)
            elif verb == b"DATA":
                self.in_data = True
                # The terminator may follow an empty body directly.
                self.buffer = b"\r\n" + self.buffer
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"BDAT":
                if not self._chunk_started(line):
                    return
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                if verb in (b"MAIL", b"RSET"):
                    self.content = []
                self.transport.write(self.answer(line, b"250 OK\r\n"))

    def _chunk_started(self, line: bytes) -> bool:
        """`BDAT size [LAST]`: read exactly `size` bytes next. A command without a size
        leaves the stream unreadable, so the sink answers 501 and hangs up."""
        words = line.split()
        last = len(words) == 3 and words[2].upper() == b"LAST"
        if len(words) not in (2, 3) or not words[1].isdigit() or (len(words) == 3 and not last):
            self.transport.write(b"501 5.5.4 Syntax: BDAT size [LAST]\r\n")
            self.transport.close()
            return False
        self.chunk_left, self.last_chunk = int(words[1]), last
        if not self.chunk_left:
            self._chunk_ended()
        return True

    def _chunk_ended(self) -> None:
        if self.last_chunk:
            self._message_ended(b"".join(self.content))
        else:
            self.transport.write(b"250 2.0.0 chunk received\r\n")

    def _message_ended(self, message: bytes) -> None:
        self.content = []
        reply = self.answer(b".", b"250 2.0.0 queued\r\n")
        if reply.startswith(b"2"):
            SinkProtocol.received += 1
            self.message_received(message)
        self.transport.write(reply)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    print(SinkProtocol.received, flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))

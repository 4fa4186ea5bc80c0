"""A minimal, fast SMTP sink for benchmarks: accepts everything, stores nothing.

aiosmtpd tops out near 1,500 messages/s here; this answers each command with one
write and scans DATA for the terminator without parsing, so the client, not the sink,
is what the benchmark measures. Postfix's `smtp-sink` (C) is faster still and is used
when it is installed. Run: `python -m newsletter.bench.sink PORT`.
"""

from __future__ import annotations

import asyncio
import signal
import sys

EHLO_REPLY = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"


class SinkProtocol(asyncio.Protocol):
    received = 0
    ehlo_reply = EHLO_REPLY  # what it offers (a test's relay offers less)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.in_data = False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    # Keep only what could hold the start of a split terminator.
                    self.buffer = self.buffer[-4:]
                    return
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                SinkProtocol.received += 1
                self.transport.write(b"250 2.0.0 queued\r\n")
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
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")


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

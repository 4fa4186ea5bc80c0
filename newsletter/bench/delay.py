"""A user-space TCP delay proxy: a relay "tens of milliseconds away" on this machine.

Each segment read from one side is written to the other `delay_ms / 2` later, in
order, so a round trip gains `delay_ms`. It counts connections (now, at most, in all).
Run: `python -m newsletter.bench.delay LISTEN_PORT TARGET_PORT DELAY_MS`; it prints
"ready", and on SIGTERM its connection counts as one line of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

CAVEAT = (
    "The delay comes from a user-space proxy on this machine, not a network: it adds "
    "latency to every segment but no bandwidth limit, loss or jitter, and its own CPU "
    "shares the cores with the sink and the workers."
)


class Counts:
    open = 0
    most = 0
    opened = 0


async def _forward(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy one direction, each segment `delay` seconds late, order kept."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (OSError, asyncio.IncompleteReadError):
        sender.cancel()
    finally:
        writer.close()


async def serve(listen_port: int, target_port: int, delay_ms: float) -> None:
    one_way = delay_ms / 2000

    async def connected(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        Counts.open += 1
        Counts.opened += 1
        Counts.most = max(Counts.most, Counts.open)
        try:
            # The connect itself crosses the distance too (SYN and SYN-ACK).
            await asyncio.sleep(one_way * 2)
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
            await asyncio.gather(
                _forward(client_r, server_w, one_way),
                _forward(server_r, client_w, one_way),
                return_exceptions=True,
            )
        except OSError:
            client_w.close()
        finally:
            Counts.open -= 1

    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(connected, "127.0.0.1", listen_port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    print(json.dumps({"most": Counts.most, "opened": Counts.opened}), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))

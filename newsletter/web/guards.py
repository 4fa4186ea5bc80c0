"""ASGI middleware every public response passes through: request guards and headers.

`RequestGuard` runs before any route reads anything:

* a path or query string holding a NUL byte is a 400 (no database takes one, and
  PostgreSQL would answer with an error, not a miss);
* a body larger than the route's limit is a 413 — told by its Content-Length before a
  byte is read, or counted while it streams (chunked bodies have no length), so a
  200 MB upload never sits in memory or on disk.

`SecurityHeaders` adds the headers of `security_headers` to every response that does
not set its own (the archive, for one, may set a stricter Content-Security-Policy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages are server-rendered HTML with one inline stylesheet and no script at all:
# nothing may run, nothing may be framed, forms post only to us.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), browsing-topics=()"
)
HSTS = "max-age=31536000"  # one year; sent only when the base URL is https


def security_headers(https: bool) -> dict[str, str]:
    """The headers every public response carries (HSTS only behind https)."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # pages hold signed tokens in their URL
        "X-Frame-Options": "DENY",
        "Permissions-Policy": PERMISSIONS_POLICY,
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if https:
        headers["Strict-Transport-Security"] = HSTS
    return headers


class SecurityHeaders:
    """Adds `headers` to every HTTP response that does not already carry them."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body passed its limit."""


def _answer(status: int, message: str, as_json: bool) -> tuple[Message, Message]:
    if as_json:
        body = json.dumps({"error": message}).encode("utf-8")
        content_type = b"application/json"
    else:
        body = (message + "\n").encode("utf-8")
        content_type = b"text/plain; charset=utf-8"
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


def _wants_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return bytes(value).startswith(b"application/json")
    path: str = scope["path"]
    return path.startswith("/webhooks/")


def too_large_message(limit: int) -> str:
    return f"The request body is too large: this address takes at most {limit:,} bytes."


class RequestGuard:
    """Refuses NUL bytes in the URL (400) and bodies over `limit_for(path)` bytes (413)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        query = scope.get("query_string", b"")
        if b"\x00" in raw_path or b"%00" in raw_path or b"\x00" in query or b"%00" in query:
            await self._send(send, 400, "The address holds a NUL byte (%00).", _wants_json(scope))
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._send(send, 413, too_large_message(limit), _wants_json(scope))
            return
        await self._guarded(scope, receive, send, limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        state: dict[str, Any] = {"received": 0, "over": False, "started": False}

        async def counting_receive() -> Message:
            if state["over"]:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    raise _BodyTooLarge
            return message

        async def watching_send(message: Message) -> None:
            if state["over"] and not state["started"]:
                return  # whatever the app answers to a cut body, the answer is our 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._send(send, 413, too_large_message(limit), _wants_json(scope))

    @staticmethod
    async def _send(send: Send, status: int, message: str, as_json: bool) -> None:
        start, body = _answer(status, message, as_json)
        await send(start)
        await send(body)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

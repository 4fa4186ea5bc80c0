"""A real HTTP server on 127.0.0.1 serving feed documents, with ETag / 304 support."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"


@dataclass
class Route:
    body: bytes
    content_type: str = "application/rss+xml"
    location: str = ""
    delay: float = 0.0
    send_length: bool = True


class FeedServer(ThreadingHTTPServer):
    """Serves `routes` on 127.0.0.1 with an ETag per body, answering 304 when it matches."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FeedHandler)
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def serve_file(self, path: str, name: str) -> str:
        self.routes[path] = Route((FEEDS / name).read_bytes())
        return self.url(path)

    def requested(self, path: str) -> list[dict[str, str]]:
        return [headers for seen, headers in self.requests if seen == path]


class _FeedHandler(BaseHTTPRequestHandler):
    server: FeedServer

    def do_GET(self) -> None:
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(self.path)
        if route is None:
            self._answer(404, b"<html><body>Not found</body></html>", "text/html")
            return
        time.sleep(route.delay)
        if route.location:
            self.send_response(301)
            self.send_header("Location", route.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(route.body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self._answer(200, route.body, route.content_type, etag, route.send_length)

    def _answer(
        self, status: int, body: bytes, content_type: str, etag: str = "", length: bool = True
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if etag:
            self.send_header("ETag", etag)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass

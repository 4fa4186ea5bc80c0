"""Issue 16, the public web app: what an outside attack found, each finding a test.

Bodies are refused while they stream and before tokens are read past (M3); only
trusted proxies' X-Forwarded-For counts (M5); confirmation mail never waits inside a
request (M6); sign-up timing tells nothing (L2); NUL bytes and deep JSON are clear
400s (L5); every response carries the security headers (L6); tokens stay out of the
access log (L12); /healthz touches nothing and /readyz names what is down (L13);
other sites cannot post the sign-up form (L15).

Where HTTP itself matters (streaming, forwarded headers, access logs, a hung relay)
the app runs under a real uvicorn on loopback; the rest talk to it through
TestClient, or straight through ASGI when a test must see what the app read.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from newsletter.audience.models import Subscriber, Suppression
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.ratelimit import Limit, MemoryRateLimiter
from newsletter.web.app import create_app
from newsletter.web.common import SignupPolicy, client_address, rate_key
from tests.factories import add_member, make_list, settings_for
from tests.processes import ROOT, RedisServer, WorkerProcess, settings_env
from tests.smtp_sink import SmtpSink, free_port

GENEROUS = SignupPolicy(
    per_ip=Limit("signup-ip", 10_000, 600),
    per_address=Limit("signup-address", 10_000, 86400),
    confirm_ttl_seconds=3 * 86400,
)
FORM = {"content-type": "application/x-www-form-urlencoded"}
SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
    "x-frame-options",
)


@pytest.fixture
def settings(sqlite_url: str, smtp_sink: SmtpSink) -> Settings:
    return settings_for(sqlite_url, mail_url=smtp_sink.url)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        yield session
    engine.dispose()


def client_for(settings: Settings, policy: SignupPolicy = GENEROUS, **kwargs: Any) -> TestClient:
    app = create_app(settings, policy=policy, rate_limiter=MemoryRateLimiter())
    return TestClient(app, follow_redirects=False, **kwargs)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as client:
        yield client


def member(session: Session, email: str = "reader@example.org") -> tuple[int, int]:
    news = make_list(session)
    reader = add_member(session, news, email, "Reader")
    session.commit()
    return reader.id, news.id


# --- talking ASGI directly: what did the app read? ----------------------------------------


@dataclass
class Exchange:
    """One request sent straight through ASGI, and what the app did with it."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reads: int = 0  # how many times the app asked for more of the body
    bytes_read: int = 0


def asgi_post(
    app: FastAPI,
    path: str,
    headers: dict[str, str],
    chunk: bytes = b"x" * 16384,
    chunks: int = 2000,
) -> Exchange:
    """POST `chunks` chunks to `app` and record how much of the body it read."""
    exchange = Exchange()

    async def receive() -> dict[str, Any]:
        if exchange.reads >= chunks:
            return {"type": "http.disconnect"}
        exchange.reads += 1
        exchange.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": exchange.reads < chunks}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            exchange.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return exchange


# --- M3: bodies limited while streaming, tokens checked first ------------------------------


def test_M3_body_over_the_limit_is_refused_before_it_is_read(settings: Settings) -> None:
    app = create_app(settings, policy=GENEROUS)
    declared = {"content-type": "application/json", "content-length": str(53_000_000)}

    exchange = asgi_post(app, "/subscribe", declared)

    assert exchange.status == 413 and exchange.reads == 0
    assert "too large" in json.loads(exchange.body)["error"]


def test_M3_a_body_without_a_length_is_cut_at_the_limit(settings: Settings) -> None:
    app = create_app(settings, policy=GENEROUS)

    exchange = asgi_post(app, "/subscribe", {"content-type": "application/json"})

    assert exchange.status == 413
    assert exchange.bytes_read <= settings.max_body_bytes + 16384


def test_M3_preferences_check_their_token_before_reading_the_form(settings: Settings) -> None:
    app = create_app(settings, policy=GENEROUS)
    multipart = {"content-type": "multipart/form-data; boundary=x", "content-length": "60000"}

    exchange = asgi_post(app, "/preferences/made-up-token", multipart, chunks=4)

    assert exchange.status == 400 and exchange.reads == 0


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid", "postmark", "ses"])
def test_M3_a_disabled_webhook_answers_404_before_reading(
    settings: Settings, provider: str
) -> None:
    app = create_app(settings, policy=GENEROUS)
    declared = {"content-type": "application/json", "content-length": "4000000"}

    exchange = asgi_post(app, f"/webhooks/{provider}", declared, chunks=250)

    assert exchange.status == 404 and exchange.reads == 0


def test_M3_postmark_credentials_are_checked_before_the_body(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"webhook_postmark_user": "hook", "webhook_postmark_password": "pass"}
    )
    app = create_app(configured, policy=GENEROUS)
    declared = {"content-type": "application/json", "content-length": "4000000"}

    exchange = asgi_post(app, "/webhooks/postmark", declared, chunks=250)

    assert exchange.status == 401 and exchange.reads == 0


# --- a real server on loopback -----------------------------------------------------------


@dataclass
class Live:
    url: str
    port: int
    app: FastAPI


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    yield from serve_in_thread(create_app(settings, policy=GENEROUS))


def serve_in_thread(app: FastAPI) -> Iterator[Live]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield Live(f"http://127.0.0.1:{port}", port, app)
    server.should_exit = True
    thread.join(timeout=10)


def test_M3_a_200_MB_upload_is_answered_without_being_sent(live: Live) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as conn:
        conn.sendall(
            b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n" + b"{" * 1000
        )
        received = b""
        while chunk := conn.recv(65536):  # the answer says "Connection: close"
            received += chunk
        answer = received.decode("latin-1")

    assert answer.startswith("HTTP/1.1 413")
    assert "too large" in answer


# --- M5: whose X-Forwarded-For counts ------------------------------------------------------


def test_M5_forwarded_for_counts_only_from_trusted_proxies() -> None:
    proxies = [__import__("ipaddress").ip_network("10.0.0.0/8")]

    assert client_address("203.0.113.9", "198.51.100.1", proxies) == "203.0.113.9"
    assert client_address("10.1.2.3", "198.51.100.1", proxies) == "198.51.100.1"
    # The client writes the left part: only the rightmost untrusted hop is believed.
    assert client_address("10.1.2.3", "6.6.6.6, 198.51.100.1, 10.9.9.9", proxies) == (
        "198.51.100.1"
    )
    assert client_address("10.1.2.3", "", proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", "not-an-address", proxies) == "10.1.2.3"


def test_M5_ipv6_clients_are_counted_per_64() -> None:
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb:cccc:dddd:eeee")
    assert rate_key("2001:db8:1:2::1") != rate_key("2001:db8:1:3::1")
    assert rate_key("::ffff:192.0.2.1") == rate_key("192.0.2.1") == "192.0.2.1"


def test_M5_a_trusted_proxy_gives_each_visitor_their_own_bucket(
    settings: Settings, session: Session
) -> None:
    make_list(session, "events", "Events")
    session.commit()
    behind = settings.model_copy(update={"trusted_proxies": "10.0.0.0/8"})
    one_each = SignupPolicy(Limit("ip", 1, 600), Limit("address", 100, 86400), 3600)

    with client_for(behind, one_each, client=("10.0.0.2", 4000)) as proxy:
        answers = [
            proxy.post(
                "/subscribe",
                data={"email": f"r{i}@example.org", "list": "events"},
                headers={"X-Forwarded-For": visitor},
            ).status_code
            for i, visitor in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.1"])
        ]

    assert answers == [200, 200, 429]


@dataclass
class Served:
    """`newsletter serve` in its own process, its stderr going to `log`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    database_url: str

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def run_serve(settings: Settings, port: int, log: Path) -> Iterator[Served]:
    """`newsletter serve` with these settings, until the generator is closed."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "newsletter"), "serve", "--port", str(port)],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"serve did not start: {log.read_text()}")
    try:
        yield Served(url, process, log, settings.database_url)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path, sqlite_url: str) -> Iterator[Served]:
    port = free_port()
    settings = settings_for(sqlite_url, base_url=f"http://127.0.0.1:{port}", signup_limit_per_ip=2)
    yield from run_serve(settings, port, tmp_path / "serve.log")


@pytest.mark.slow
def test_M5_serve_does_not_believe_forwarded_for_from_loopback(served: Served) -> None:
    engine = make_engine(served.database_url)
    with make_sessionmaker(engine)() as session:
        make_list(session, "events", "Events")
        session.commit()
    engine.dispose()

    answers = [
        httpx.post(
            f"{served.url}/subscribe",
            json={"email": f"r{i}@example.org", "list": "events"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
            timeout=10,
        ).status_code
        for i in range(3)
    ]

    assert answers == [200, 200, 429]


# --- L12: no tokens in the access log -----------------------------------------------------


@pytest.mark.slow
def test_L12_the_access_log_holds_no_token(served: Served) -> None:
    token = TokenSigner("test-secret").sign(Purpose.unsubscribe, 1, 1)
    for path in ("unsubscribe", "preferences", "confirm", "next"):
        httpx.get(f"{served.url}/{path}/{token}?from=mail", timeout=10)
    httpx.get(f"{served.url}/subscribe?list=events", timeout=10)

    deadline = time.monotonic() + 5
    while "/next/" not in served.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = served.log_text()
    assert token not in log and token[:12] not in log
    for path in ("unsubscribe", "preferences", "confirm", "next"):
        assert f"/{path}/[token]?from=mail" in log
    assert "/subscribe?list=events" in log


# --- M6: no mail inside a request; Must-show 3: a hung relay under load -------------------


class HungRelay:
    """An SMTP server that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(200)
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=5"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, so its connection counts are ours alone."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def hung_relay() -> Iterator[HungRelay]:
    relay = HungRelay()
    yield relay
    relay.close()


def test_M6_a_signup_is_answered_while_the_relay_hangs(
    sqlite_url: str, hung_relay: HungRelay
) -> None:
    settings = settings_for(sqlite_url, mail_url=hung_relay.url)
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        make_list(session, "events", "Events")
        session.commit()
    engine.dispose()
    with client_for(settings) as client:
        started = time.monotonic()
        answer = client.post("/subscribe", data={"email": "a@example.org", "list": "events"})
        took = time.monotonic() - started
        hung_relay.close()  # lets the queued confirmation fail now, not in 5 s

    assert answer.status_code == 200
    assert took < 2.0  # the relay's timeout is 5 s: the answer did not wait for it


@pytest.mark.slow
def test_M6_unsubscribe_stays_fast_under_signups_while_the_relay_hangs(
    sqlite_url: str, hung_relay: HungRelay, tmp_path: Path
) -> None:
    """Must-show 3: `newsletter serve` takes 45 sign-ups (the issue's count) in a second
    and a half while the relay accepts and never answers; the unsubscribe page, asked
    100 times meanwhile, keeps its p99 under 200 ms (on the unfixed code it waited for
    the relay's timeout)."""
    port = free_port()
    settings = settings_for(
        sqlite_url,
        base_url=f"http://127.0.0.1:{port}",
        mail_url=hung_relay.url,
        signup_limit_per_ip=10_000,
        signup_limit_per_address=10_000,
    )
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        news = make_list(session, "events", "Events")
        reader = add_member(session, news, "reader@example.org")
        session.commit()
        token = TokenSigner(settings.secret_key).sign(Purpose.unsubscribe, reader.id, news.id)
    engine.dispose()

    async def sign_up_everyone(url: str) -> list[int]:
        """45 sign-ups, a new one every 30 ms, each waited for on its own."""
        async with httpx.AsyncClient(base_url=url, timeout=30) as signups:
            posts = []
            for i in range(45):
                body = {"email": f"s{i}@example.org", "list": "events"}
                posts.append(asyncio.create_task(signups.post("/subscribe", json=body)))
                await asyncio.sleep(0.03)
            answers = await asyncio.gather(*posts)
        return [answer.status_code for answer in answers]

    latencies: list[float] = []
    for served in run_serve(settings, port, tmp_path / "serve.log"):
        with (
            httpx.Client(base_url=served.url, timeout=2) as reader_browser,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            # A warm site: the page compiled, the reader's connection open.
            assert reader_browser.get(f"/unsubscribe/{token}").status_code == 200
            signups = pool.submit(asyncio.run, sign_up_everyone(served.url))
            time.sleep(0.2)  # the first sign-ups are in, and the relay holds their mail
            for _ in range(100):  # a reader every 10 ms, while the sign-ups go on
                started = time.perf_counter()
                page = reader_browser.get(f"/unsubscribe/{token}")
                latencies.append(time.perf_counter() - started)
                assert page.status_code == 200
                time.sleep(0.01)
            assert signups.result() == [200] * 45
        hung_relay.close()

    p99 = statistics.quantiles(latencies, n=100)[98]
    figures = f"p99 {p99 * 1000:.1f} ms, median {statistics.median(latencies) * 1000:.1f} ms"
    print(f"unsubscribe page under 45 sign-ups with a hung relay: {figures}")
    assert p99 < 0.2, figures


@pytest.mark.slow
def test_M6_with_a_real_broker_the_workers_send_the_confirmation(
    sqlite_url: str, smtp_sink: SmtpSink, private_redis: RedisServer
) -> None:
    settings = settings_for(sqlite_url, mail_url=smtp_sink.url, broker_url=private_redis.url)
    # The web process could not send it itself: only a worker can have sent the mail.
    web_settings = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{free_port()}"})
    engine = make_engine(sqlite_url)
    with make_sessionmaker(engine)() as session:
        make_list(session, "events", "Events")
        session.commit()
    engine.dispose()
    worker = WorkerProcess(settings, concurrency=1).start()
    try:
        with client_for(web_settings) as client:
            answer = client.post(
                "/subscribe", json={"email": "reader@example.org", "list": "events"}
            )
        deadline = time.monotonic() + 30
        while smtp_sink.handler.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()

    assert answer.status_code == 200
    assert smtp_sink.handler.recipients() == ["reader@example.org"]
    assert "/confirm/" in smtp_sink.handler.received[0].data.decode()


# --- L2: the time of the answer tells nothing -------------------------------------------


def test_L2_unknown_known_and_suppressed_addresses_take_the_same_time(
    client: TestClient, session: Session
) -> None:
    news = make_list(session)
    add_member(session, news, "known@example.org")
    session.add(Suppression(email="suppressed@example.org", reason="hard-bounce"))
    session.commit()
    timings: dict[str, list[float]] = {"unknown": [], "known": [], "suppressed": []}

    for round_ in range(5):
        for kind in timings:
            email = f"new{round_}@example.org" if kind == "unknown" else f"{kind}@example.org"
            started = time.perf_counter()
            answer = client.post("/subscribe", data={"email": email, "list": "clinic-news"})
            timings[kind].append(time.perf_counter() - started)
            assert answer.status_code == 200

    floor = GENEROUS.answer_seconds
    assert all(t >= floor for ts in timings.values() for t in ts)
    fastest = {kind: min(ts) for kind, ts in timings.items()}
    assert max(fastest.values()) - min(fastest.values()) < 0.004, fastest


# --- L5: NUL bytes and deep JSON ---------------------------------------------------------


@pytest.fixture
def any_db_client(database_url: str, smtp_sink: SmtpSink) -> Iterator[TestClient]:
    settings = settings_for(
        database_url,
        mail_url=smtp_sink.url,
        webhook_postmark_user="hook",
        webhook_postmark_password="pass",
    )
    with client_for(settings, raise_server_exceptions=False) as client:
        yield client


def test_L5_nul_bytes_are_a_clear_400_on_every_backend(
    any_db_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = any_db_client
    postmark = {"Authorization": "Basic aG9vazpwYXNz"}  # hook:pass
    bounce = {"RecordType": "Bounce", "Type": "HardBounce", "ID": 1, "Email": "a\x00@x.org"}
    answers = [
        client.post("/subscribe", json={"email": "a\x00b@example.org", "list": "news"}),
        client.post("/subscribe", json={"email": "a@example.org", "list": "news\x00"}),
        client.post("/subscribe", data={"email": "a@example.org", "list": "news\x00x"}),
        client.post("/subscribe", data={"email": "a@example.org", "name": "A\x00", "list": "x"}),
        client.get("/articles/some%00thing"),
        client.get("/archive/runs/1%00"),
        client.get("/unsubscribe/abc%00def"),
        client.get("/subscribe?list=news%00"),
        client.post("/webhooks/postmark", json=bounce, headers=postmark),
    ]

    assert [a.status_code for a in answers] == [400] * len(answers)
    assert all("NUL" in a.text for a in answers)
    assert not [r for r in caplog.records if r.exc_info]


def test_L5_json_nested_too_deeply_is_a_clear_400(
    any_db_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = any_db_client
    postmark = {"Authorization": "Basic aG9vazpwYXNz", "Content-Type": "application/json"}
    deep_signup = "[" * 30_000 + "]" * 30_000  # fits the 64 KB limit of forms
    deep_webhook = "[" * 100_000 + "]" * 100_000

    signup = client.post(
        "/subscribe", content=deep_signup, headers={"Content-Type": "application/json"}
    )
    webhook = client.post("/webhooks/postmark", content=deep_webhook, headers=postmark)

    assert signup.status_code == 400 and "nested too deeply" in signup.json()["reason"]
    assert webhook.status_code == 400 and "nested too deeply" in webhook.json()["error"]
    assert not [r for r in caplog.records if r.exc_info]


# --- L6: security headers on every public response --------------------------------------


def test_L6_every_public_response_carries_the_security_headers(
    client: TestClient, session: Session, settings: Settings
) -> None:
    subscriber_id, list_id = member(session)
    token = TokenSigner(settings.secret_key).sign(Purpose.preferences, subscriber_id, list_id)
    answers = [
        client.get("/subscribe"),
        client.get(f"/preferences/{token}"),
        client.get("/unsubscribe/forged"),
        client.get("/archive"),
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/no-such-page"),
        client.post("/webhooks/mailgun", json={}),
        client.post("/subscribe", content=b"x" * 70_000, headers=FORM),
        client.get("/articles/a%00"),
    ]

    for answer in answers:
        missing = [h for h in SECURITY_HEADERS if h not in answer.headers]
        assert not missing, (answer.request.url, answer.status_code, missing)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        # The base URL is https (tests.factories): browsers must keep to https.
        assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_L6_no_hsts_over_plain_http_and_no_api_schema_or_docs(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, base_url="http://localhost:8000")
    with client_for(settings) as client:
        page = client.get("/subscribe")
        assert "strict-transport-security" not in page.headers
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404


# --- L13: /healthz and /readyz ------------------------------------------------------------


def test_L13_healthz_asks_no_dependency(sqlite_url: str, tmp_path: Path) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    missing_db = f"sqlite:///{tmp_path}/missing/newsletter.db"
    settings = settings_for(missing_db, broker_url=dead_broker)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/healthz")

    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_L13_readyz_names_the_failing_dependency_in_words(sqlite_url: str) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    engine.dispose()
    settings = settings_for(sqlite_url, broker_url=dead_broker)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    body = answer.json()
    assert body["database"] == "ok"
    assert body["broker"] == "unreachable"
    assert "not at the head revision" in body["migrations"]
    assert not re.search(r"[A-Z][a-z]+Error|Exception", answer.text)


def test_L13_readyz_asks_the_broker_over_one_kept_connection(
    sqlite_url: str, private_redis: RedisServer
) -> None:
    settings = settings_for(sqlite_url, broker_url=private_redis.url)
    stats = redis.Redis.from_url(private_redis.url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        before = int(stats.info("stats")["total_connections_received"])
        answers = [client.get("/readyz").status_code for _ in range(20)]
        after = int(stats.info("stats")["total_connections_received"])
    stats.close()

    assert answers == [200] * 20
    assert after == before  # twenty probes, not one new connection


# --- L15: other sites cannot post the sign-up form ----------------------------------------


def test_L15_a_cross_site_form_post_is_refused(
    client: TestClient, session: Session, settings: Settings
) -> None:
    make_list(session, "events", "Events")
    session.commit()

    def signup(email: str, headers: dict[str, str], as_json: bool = False) -> int:
        fields = {"email": email, "list": "events"}
        if as_json:
            return client.post("/subscribe", json=fields, headers=headers).status_code
        return client.post("/subscribe", data=fields, headers=headers).status_code

    assert signup("a@example.org", {"Origin": "https://evil.example"}) == 403
    assert signup("b@example.org", {"Origin": "null"}) == 403
    assert signup("c@example.org", {"Sec-Fetch-Site": "cross-site"}) == 403
    assert signup("d@example.org", {"Origin": settings.base_url}) == 200
    assert signup("e@example.org", {"Sec-Fetch-Site": "same-origin"}) == 200
    assert signup("f@example.org", {}) == 200  # curl, a server-side form handler
    assert signup("g@example.org", {"Origin": "https://evil.example"}, as_json=True) == 200
    session.expire_all()
    created = {s.email for s in session.query(Subscriber)}
    assert created == {f"{c}@example.org" for c in "defg"}


def test_L15_an_origin_allowed_by_the_setting_may_post_the_form(
    sqlite_url: str, session: Session
) -> None:
    make_list(session, "events", "Events")
    session.commit()
    settings = settings_for(sqlite_url, signup_allowed_origins="https://www.clinic.example")
    with client_for(settings) as client:
        allowed = client.post(
            "/subscribe",
            data={"email": "a@example.org", "list": "events"},
            headers={"Origin": "https://www.clinic.example"},
        )
        other = client.post(
            "/subscribe",
            data={"email": "b@example.org", "list": "events"},
            headers={"Origin": "https://clinic.example.evil.example"},
        )

    assert (allowed.status_code, other.status_code) == (200, 403)
    assert "may only be sent from" in other.text

"""Outgoing webhooks: endpoints staff register, and the delivery of their events.

Events wait in the outbox (events/outbox.py), written with the change they report.
The scheduler's tick claims due rows (`claim_due`) and a worker task posts each one
(`deliver`), so nothing is lost to a Redis flush or a killed worker: a claim is a
lease, and a row whose lease ran out is claimed again.

Each POST carries JSON ``{"id", "type", "created_at", "data"}`` and the header

    Newsletter-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

(`sign`, `verify`). A 2xx answer delivers the event; anything else (another status, a
timeout, a refused address) is a failed attempt, logged with its status, duration
and the first 500 characters of the answer, and retried with exponential backoff
(NEWSLETTER_WEBHOOKS_RETRY_BASE_SECONDS doubling, at most
NEWSLETTER_WEBHOOKS_MAX_ATTEMPTS). An endpoint that fails
NEWSLETTER_WEBHOOKS_DISABLE_AFTER times in a row (default 10) over at least
NEWSLETTER_WEBHOOKS_DISABLE_MIN_HOURS (default 1 h) is disabled, with an audit entry;
its pending events wait until it is enabled again. Redirects are not followed.

Only https:// URLs in production, and only hosts whose every address is public: the
host is resolved when the endpoint is saved *and* at each send, and the connection
goes to the address that was checked (no DNS rebinding), unless
NEWSLETTER_WEBHOOKS_ALLOW_PRIVATE=1.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from newsletter import metrics
from newsletter.accounts import audit
from newsletter.config import Settings
from newsletter.content.feeds import PublicOnlyBackend, address_kind
from newsletter.db import utcnow
from newsletter.errors import InvalidInputError, NotFoundError
from newsletter.events.models import OutboxStatus, WebhookAttempt, WebhookEndpoint, WebhookOutbox
from newsletter.events.outbox import EVENTS, TEST_EVENT, forget_endpoints, outbox_row

SIGNATURE_HEADER = "Newsletter-Signature"
USER_AGENT = "newsletter-webhooks/1"
EXCERPT = 500
MAX_URL = 2000
LEASE = timedelta(minutes=2)
MAX_BACKOFF = timedelta(hours=6)
SYSTEM = audit.Actor(label="system:webhooks", via="system")


# --- signatures --------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300, now: float = 0) -> bool:
    """Whether `header` signs `body` with `secret`, made at most `tolerance` seconds
    ago (what a receiver does; the README shows it standalone)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# --- endpoints ---------------------------------------------------------------------------


def check_url(url: str, settings: Settings) -> str:
    """The URL, stripped, if webhooks may be sent to it; InvalidInputError naming the
    field otherwise."""
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidInputError(f"url: at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InvalidInputError(f"url: not a URL ({exc})") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidInputError("url: must be an https:// URL with a host")
    if parts.scheme != "https" and settings.env == "production":
        raise InvalidInputError("url: must be https:// (plain http only in development)")
    if parts.username or parts.password:
        raise InvalidInputError("url: must not carry a user name or password")
    if not settings.webhooks_allow_private:
        _check_public(host)
    return url


def _check_public(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InvalidInputError(f"url: the host {host!r} cannot be resolved") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        kind = address_kind(address)
        if kind is not None:
            raise InvalidInputError(
                f"url: {host} is at {address}, a {kind} address; webhooks go to public "
                "addresses only (NEWSLETTER_WEBHOOKS_ALLOW_PRIVATE=1 allows others)"
            )


def check_events(events: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(e.strip() for e in events if e.strip()))
    if not chosen:
        raise InvalidInputError(f"events: choose at least one of {', '.join(EVENTS)} or *")
    for event in chosen:
        if event != "*" and event not in EVENTS:
            raise InvalidInputError(f"events: unknown event {event!r} (known: {', '.join(EVENTS)})")
    return chosen


def _audited(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
    }


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once; receivers keep it to verify signatures


def create_endpoint(
    session: Session,
    settings: Settings,
    url: str,
    events: Sequence[str],
    description: str = "",
) -> CreatedEndpoint:
    """A new, enabled endpoint with a fresh secret."""
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        url=check_url(url, settings),
        events=check_events(events),
        description=description.strip()[:500],
        secret=secret,
        enabled=True,
        failure_count=0,
        disabled_reason="",
    )
    session.add(endpoint)
    session.flush()
    forget_endpoints(session)
    audit.record(session, "webhook.create", f"webhook:{endpoint.id}", after=_audited(endpoint))
    return CreatedEndpoint(endpoint, secret)


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id}")
    return endpoint


def list_endpoints(
    session: Session, after_id: int = 0, limit: int | None = None
) -> list[WebhookEndpoint]:
    query = (
        select(WebhookEndpoint).where(WebhookEndpoint.id > after_id).order_by(WebhookEndpoint.id)
    )
    return list(session.scalars(query.limit(limit) if limit else query))


def set_enabled(session: Session, endpoint_id: int, enabled: bool) -> WebhookEndpoint:
    """Enable (its failure count starts again; waiting events go out) or disable."""
    endpoint = get_endpoint(session, endpoint_id)
    before = _audited(endpoint)
    endpoint.enabled = enabled
    if enabled:
        endpoint.failure_count = 0
        endpoint.failing_since = None
        endpoint.disabled_reason = ""
    else:
        endpoint.disabled_reason = "disabled by staff"
    session.flush()
    forget_endpoints(session)
    if before != _audited(endpoint):
        action = "webhook.enable" if enabled else "webhook.disable"
        audit.record(
            session, action, f"webhook:{endpoint.id}", before=before, after=_audited(endpoint)
        )
    return endpoint


def update_endpoint(
    session: Session,
    settings: Settings,
    endpoint_id: int,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    """Change where an endpoint is, what it hears or its description (checked as when
    it was made); events already queued keep going to it."""
    endpoint = get_endpoint(session, endpoint_id)
    before = _audited(endpoint)
    if url is not None:
        endpoint.url = check_url(url, settings)
    if events is not None:
        endpoint.events = check_events(events)
    if description is not None:
        endpoint.description = description.strip()[:500]
    session.flush()
    forget_endpoints(session)
    if before != _audited(endpoint):
        audit.record(
            session,
            "webhook.update",
            f"webhook:{endpoint.id}",
            before=before,
            after=_audited(endpoint),
        )
    return endpoint


def delete_endpoint(session: Session, endpoint_id: int) -> None:
    """Remove an endpoint with its waiting events and its delivery log."""
    endpoint = get_endpoint(session, endpoint_id)
    before = _audited(endpoint)
    session.delete(endpoint)
    session.flush()
    forget_endpoints(session)
    audit.record(session, "webhook.delete", f"webhook:{endpoint_id}", before=before)


def send_test(session: Session, endpoint_id: int) -> WebhookOutbox:
    """Queue a `webhook.test` event for this endpoint (enabled or not: a test is how
    staff check a fixed receiver before enabling it again)."""
    endpoint = get_endpoint(session, endpoint_id)
    row = outbox_row(endpoint.id, TEST_EVENT, {"endpoint_id": endpoint.id}, utcnow())
    session.add(row)
    session.flush()
    audit.record(session, "webhook.test", f"webhook:{endpoint.id}")
    return row


def describe_endpoint(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as plain data; the secret only by its first characters."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "failure_count": endpoint.failure_count,
        "failing_since": endpoint.failing_since.isoformat() if endpoint.failing_since else None,
        "disabled_reason": endpoint.disabled_reason,
        "secret_hint": endpoint.secret[:10] + "…",
        "created_at": endpoint.created_at.isoformat(),
    }


def list_attempts(
    session: Session, endpoint_id: int, before_id: int = 0, limit: int = 50
) -> list[tuple[WebhookAttempt, WebhookOutbox]]:
    """The endpoint's delivery log, newest first (keyset: ids below `before_id`)."""
    get_endpoint(session, endpoint_id)
    query = (
        select(WebhookAttempt, WebhookOutbox)
        .join(WebhookOutbox, WebhookOutbox.id == WebhookAttempt.outbox_id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit)
    )
    if before_id:
        query = query.where(WebhookAttempt.id < before_id)
    return [(a, o) for a, o in session.execute(query).all()]


def describe_attempt(attempt: WebhookAttempt, row: WebhookOutbox) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "event": row.event,
        "event_id": row.event_id,
        "attempted_at": attempt.attempted_at.isoformat(),
        "ok": attempt.ok,
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
        "event_status": row.status.value,
        "attempts": row.attempts,
    }


# --- delivery ----------------------------------------------------------------------------


def claim_due(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Lease the outbox rows due now (of enabled endpoints) and return their ids; the
    caller commits, then enqueues one delivery task per id."""
    ids = list(
        session.scalars(
            select(WebhookOutbox.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookOutbox.endpoint_id)
            .where(
                WebhookOutbox.status == OutboxStatus.pending,
                WebhookOutbox.next_attempt_at <= now,
                or_(WebhookOutbox.claimed_until.is_(None), WebhookOutbox.claimed_until < now),
                or_(WebhookEndpoint.enabled, WebhookOutbox.event == TEST_EVENT),
            )
            .order_by(WebhookOutbox.id)
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            update(WebhookOutbox)
            .where(WebhookOutbox.id.in_(ids))
            .values(claimed_until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
    return ids


@dataclass(frozen=True)
class Answer:
    ok: bool
    status_code: int | None
    duration_ms: int
    error: str = ""
    excerpt: str = ""


Post = Callable[[str, bytes, dict[str, str]], Answer]


def http_poster(settings: Settings) -> Post:
    """POSTs over httpx: the settings' timeout and extra CA; connections only to
    public addresses (resolved and checked at connect time) unless allowed."""
    context = ssl.create_default_context()
    if settings.webhooks_ca_file:
        context.load_verify_locations(cafile=settings.webhooks_ca_file)
    transport = httpx.HTTPTransport(verify=context, trust_env=False)
    if not settings.webhooks_allow_private:
        transport._pool = httpcore.ConnectionPool(  # as content/feeds.py does for feeds
            ssl_context=context, network_backend=PublicOnlyBackend()
        )
    client = httpx.Client(
        transport=transport,
        timeout=settings.webhooks_timeout,
        follow_redirects=False,
        trust_env=False,
    )

    def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
        started = time.monotonic()
        try:
            with client.stream("POST", url, content=body, headers=headers) as response:
                excerpt = _read_excerpt(response)
                ms = int((time.monotonic() - started) * 1000)
                ok = 200 <= response.status_code < 300
                error = "" if ok else f"HTTP {response.status_code}"
                return Answer(ok, response.status_code, ms, error, excerpt)
        except httpx.HTTPError as exc:
            ms = int((time.monotonic() - started) * 1000)
            return Answer(False, None, ms, f"{type(exc).__name__}: {exc}"[:EXCERPT])

    return post


def _read_excerpt(response: httpx.Response) -> str:
    data = b""
    for piece in response.iter_bytes():
        data += piece
        if len(data) >= EXCERPT * 4:
            break
    return data.decode("utf-8", "replace")[:EXCERPT]


def payload(row: WebhookOutbox) -> bytes:
    body = {
        "id": row.event_id,
        "type": row.event,
        "created_at": row.created_at.isoformat(),
        "data": row.data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def deliver(sessions: sessionmaker[Session], outbox_id: int, settings: Settings, post: Post) -> str:
    """Post one outbox row and record the attempt; returns "delivered", "failed"
    (this attempt) or "skipped" (gone, done, or its endpoint disabled). No
    transaction stays open during the POST."""
    with sessions() as session:
        row = session.get(WebhookOutbox, outbox_id)
        if row is None or row.status is not OutboxStatus.pending:
            return "skipped"
        endpoint = session.get_one(WebhookEndpoint, row.endpoint_id)
        if not endpoint.enabled and row.event != TEST_EVENT:
            return "skipped"
        url, secret, body = endpoint.url, endpoint.secret, payload(row)
        event, event_id = row.event, row.event_id
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        "Newsletter-Event": event,
        "Newsletter-Event-Id": event_id,
    }
    try:
        # Checked again at send time (scheme, and the host's addresses now); the
        # connection itself then goes only to an address checked at connect time.
        check_url(url, settings)
        answer = post(url, body, headers)
    except InvalidInputError as exc:
        answer = Answer(False, None, 0, str(exc)[:EXCERPT])
    metrics.count_webhook_delivery("delivered" if answer.ok else "failed")
    with sessions() as session:
        audit.act_as(session, SYSTEM)
        record_attempt(session, outbox_id, answer, settings, utcnow())
        session.commit()
    return "delivered" if answer.ok else "failed"


def record_attempt(
    session: Session, outbox_id: int, answer: Answer, settings: Settings, now: datetime
) -> None:
    """The attempt in the log; the row delivered, retried later or given up; the
    endpoint's failure streak, and its disabling when the streak is long enough."""
    row = session.get_one(WebhookOutbox, outbox_id)
    endpoint = session.get_one(WebhookEndpoint, row.endpoint_id)
    session.add(
        WebhookAttempt(
            outbox_id=row.id,
            endpoint_id=endpoint.id,
            attempted_at=now,
            ok=answer.ok,
            status_code=answer.status_code,
            duration_ms=answer.duration_ms,
            error=answer.error[:EXCERPT],
            response_excerpt=answer.excerpt[:EXCERPT],
        )
    )
    row.attempts += 1
    row.claimed_until = None
    if answer.ok:
        row.status = OutboxStatus.delivered
        row.delivered_at = now
        endpoint.failure_count = 0
        endpoint.failing_since = None
        return
    if row.attempts >= settings.webhooks_max_attempts or row.event == TEST_EVENT:
        row.status = OutboxStatus.failed  # a test is tried once: staff read the answer
    else:
        delay = timedelta(seconds=settings.webhooks_retry_base_seconds * 2 ** (row.attempts - 1))
        row.next_attempt_at = now + min(delay, MAX_BACKOFF)
    endpoint.failure_count += 1
    endpoint.failing_since = endpoint.failing_since or now
    streak = now - endpoint.failing_since
    if (
        endpoint.enabled
        and endpoint.failure_count >= settings.webhooks_disable_after
        and streak >= timedelta(hours=settings.webhooks_disable_min_hours)
    ):
        before = _audited(endpoint)
        endpoint.enabled = False
        endpoint.disabled_reason = (
            f"{endpoint.failure_count} failed attempts in a row since "
            f"{endpoint.failing_since:%Y-%m-%d %H:%M} UTC; last: {answer.error}"
        )[:500]
        forget_endpoints(session)
        audit.record(
            session,
            "webhook.disabled",
            f"webhook:{endpoint.id}",
            before=before,
            after=_audited(endpoint),
            detail={"reason": endpoint.disabled_reason},
        )

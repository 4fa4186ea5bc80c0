"""The links in every email: one-click unsubscribe (RFC 8058), "send me the next one
now", and the subscriber's preferences.

Subscriber-facing links carry signed tokens; the unsubscribe POST needs no cookie or
login and answers 200 without redirecting, as RFC 8058 requires, while a GET only
shows a page with a button (link scanners must not unsubscribe anyone).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from newsletter.audience.signup import FieldError
from newsletter.audience.subscriptions import memberships, unsubscribe
from newsletter.audience.tokens import InvalidTokenError, Purpose
from newsletter.db import utcnow
from newsletter.errors import NotFoundError
from newsletter.sequences.engine import send_next_now
from newsletter.services.preferences import apply_preferences, load_preferences, parse_preferences
from newsletter.web.common import SessionDep, Web, without_nul

MAX_FIELDS = 1000  # csrf, name, timezone, and a box per list and per sequence


def csrf_token(secret_key: str, preferences_token: str) -> str:
    """The preferences form's CSRF value: HMAC(secret, "csrf:" + preferences token)."""
    key = hashlib.sha256(b"newsletter-csrf:" + secret_key.encode()).digest()
    message = b"csrf:" + preferences_token.encode("utf-8", "replace")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@cache
def timezone_names() -> list[str]:
    return sorted(available_timezones())


def routes(web: Web) -> APIRouter:
    """/unsubscribe/{token}, /next/{token} and /preferences/{token}."""
    app = APIRouter()

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        try:
            claims = web.signer.verify(token, Purpose.unsubscribe)
            subscriber, lists = memberships(session, claims.subscriber_id)
        except (InvalidTokenError, NotFoundError) as exc:
            return web.invalid_link(request, str(exc))
        current = next((m for m in lists if m.list_id == claims.list_id), None)
        return web.page(
            request, "unsubscribe.html", email=subscriber.email, membership=current, token=token
        )

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_now(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        # Both the RFC 8058 one-click POST (body List-Unsubscribe=One-Click, sent by the
        # mailbox provider) and the button on our own page land here.
        try:
            claims = web.signer.verify(token, Purpose.unsubscribe)
            mailing_list = unsubscribe(
                session, claims.subscriber_id, claims.list_id, source="unsubscribe link"
            )
            session.commit()
        except (InvalidTokenError, NotFoundError) as exc:
            return web.invalid_link(request, str(exc))
        return web.message(
            request,
            200,
            "You are unsubscribed",
            f"You will receive no more emails from {mailing_list.name}.",
        )

    @app.get("/next/{token}", response_class=HTMLResponse)
    def next_step_page(request: Request, token: str) -> HTMLResponse:
        try:
            web.signer.verify(token, Purpose.next_step)
        except InvalidTokenError as exc:
            return web.invalid_link(request, str(exc))
        return web.page(request, "next.html", token=token)

    @app.post("/next/{token}", response_class=HTMLResponse)
    def next_step_now(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        # A POST, like unsubscribing: a mail scanner following the link changes nothing.
        try:
            claims = web.signer.verify(token, Purpose.next_step)
        except InvalidTokenError as exc:
            return web.invalid_link(request, str(exc))
        moved = send_next_now(session, claims.subscriber_id, claims.sequence_id, utcnow())
        session.commit()
        message = (
            "The next article is on its way; it should arrive within a few minutes."
            if moved
            else "You have every article of this series so far; the next one will come "
            "when it is published."
        )
        return web.message(request, 200, "Next article", message)

    _preferences_routes(app, web)
    return app


def _preferences_routes(app: APIRouter, web: Web) -> None:
    def show(
        request: Request,
        session: Session,
        subscriber_id: int,
        token: str,
        status: int = 200,
        **notes: Any,
    ) -> HTMLResponse:
        prefs = load_preferences(session, subscriber_id)
        unsubscribe_links = {
            m.list_id: web.signer.sign(Purpose.unsubscribe, subscriber_id, m.list_id)
            for m in prefs.lists
            if m.subscribed
        }
        return web.page(
            request,
            "preferences.html",
            status,
            title="Your preferences",
            prefs=prefs,
            unsubscribe=unsubscribe_links,
            csrf=csrf_token(web.settings.secret_key, token),
            timezones=timezone_names(),
            **notes,
        )

    @app.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        try:
            claims = web.signer.verify(token, Purpose.preferences)
            return show(request, session, claims.subscriber_id, token)
        except (InvalidTokenError, NotFoundError) as exc:
            return web.invalid_link(request, str(exc))

    @app.post("/preferences/{token}", response_class=HTMLResponse)
    async def save_preferences(request: Request, token: str) -> HTMLResponse:
        # The token is checked before a byte of the body is read: a stranger's post to
        # a made-up link costs us nothing (no form parsing, no spooled upload).
        try:
            claims = web.signer.verify(token, Purpose.preferences)
        except InvalidTokenError as exc:
            return web.invalid_link(request, str(exc))
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return web.message(request, 415, "Please try again", "Send the preferences form.")
        form = await request.form(max_files=0, max_fields=MAX_FIELDS)

        def text(name: str) -> str:
            value = form.get(name, "")
            return value if isinstance(value, str) else ""

        def texts(name: str) -> list[str]:
            return [v for v in form.getlist(name) if isinstance(v, str)]

        expected = csrf_token(web.settings.secret_key, token)
        if not hmac.compare_digest(text("csrf").encode("utf-8"), expected.encode("ascii")):
            return web.message(
                request, 403, "Please try again", "This form expired; open the link again."
            )
        return await run_in_threadpool(
            save, request, token, claims.subscriber_id, text, texts("list"), texts("paused")
        )

    def save(
        request: Request,
        token: str,
        subscriber_id: int,
        text: Callable[[str], str],
        slugs: list[str],
        paused: list[str],
    ) -> HTMLResponse:
        with web.sessions() as session:
            return _save(request, session, token, subscriber_id, text, slugs, paused)

    def _save(
        request: Request,
        session: Session,
        token: str,
        subscriber_id: int,
        text: Callable[[str], str],
        slugs: list[str],
        paused: list[str],
    ) -> HTMLResponse:
        try:
            choices = parse_preferences(
                without_nul("name", text("name")),
                without_nul("timezone", text("timezone")),
                [without_nul("list", v) for v in slugs],
                [without_nul("paused", v) for v in paused],
            )
            apply_preferences(session, subscriber_id, choices)
            session.commit()
        except FieldError as exc:
            session.rollback()
            return show(request, session, subscriber_id, token, 400, error=exc)
        except NotFoundError as exc:
            return web.invalid_link(request, str(exc))
        return show(request, session, subscriber_id, token, saved=True)

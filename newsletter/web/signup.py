"""Signing up (form and JSON) and confirming: /subscribe, /confirm/{token}.

The signup form answers the same, status and body, whatever the state of the
address (new, pending, confirmed, unsubscribed, suppressed), no sooner than the
policy's `answer_seconds` after the request came, and the confirmation email is
handed to a queue (web/background.py, or the Celery workers) instead of being sent
inside the request, so neither the answer nor its timing tells a stranger who is
subscribed, and a hung relay holds no request. See audience/signup.py for what
happens in each state.

A browser's form post must come from one of our own origins (the base URL's, or
NEWSLETTER_SIGNUP_ALLOWED_ORIGINS): another site cannot sign its visitors up. JSON
needs a CORS preflight we never grant, so it is left to scripts and other servers,
which send no Origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.audience.models import MailingList
from newsletter.audience.signup import FieldError, find_lists, parse_signup, request_subscription
from newsletter.audience.subscriptions import ConfirmOutcome, confirm_pending
from newsletter.audience.tokens import InvalidTokenError, Purpose
from newsletter.errors import NotFoundError
from newsletter.ratelimit import Limit, RateLimiterUnavailableError
from newsletter.web.common import SessionDep, Web, wants_json, without_nul

log = logging.getLogger(__name__)

HONEYPOT = "website"  # a field humans never see; bots fill it
MAX_FIELDS = 200  # email, name, the honeypot and up to MAX_LISTS lists, with room
ACCEPTED = (
    "Thank you. Please check your inbox: if your subscription needs confirming, we have "
    "sent you an email with a link to follow."
)


@dataclass(frozen=True)
class SignupForm:
    """The raw fields of a signup, from a urlencoded form or a JSON object."""

    email: str
    name: str
    lists: list[str]
    honeypot: str


class UnsupportedBodyError(FieldError):
    """The signup body is neither a form nor JSON (answered 415)."""


def _json_signup(data: object) -> SignupForm:
    """A signup from a JSON object: strings, and `list` a slug or an array of slugs."""
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")

    def string(field: str) -> str:
        value = data.get(field) or ""
        if not isinstance(value, str):
            raise FieldError(field, "must be a string")
        return without_nul(field, value)

    lists = data.get("list") or []
    if isinstance(lists, str):
        lists = [lists]
    if not isinstance(lists, list) or not all(isinstance(v, str) for v in lists):
        raise FieldError("list", "must be a list slug or an array of slugs")
    lists = [without_nul("list", v) for v in lists]
    return SignupForm(string("email"), string("name"), lists, string(HONEYPOT))


def parse_json_body(body: bytes) -> object:
    """The JSON document in `body`; FieldError("body") when it is not JSON, or nests
    deeper than Python's parser goes (which would otherwise be a RecursionError)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FieldError("body", "not valid JSON") from exc
    except RecursionError as exc:
        raise FieldError("body", "JSON nested too deeply") from exc


async def read_signup_form(request: Request) -> SignupForm:
    """The signup's fields; FieldError for a body that is neither a form nor a JSON object."""
    if wants_json(request):
        return _json_signup(parse_json_body(await request.body()))
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        raise UnsupportedBodyError("body", "send a form or a JSON object")
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)

    def field(name: str) -> str:
        value = form.get(name, "")
        return without_nul(name, value) if isinstance(value, str) else ""

    lists = [without_nul("list", v) for v in form.getlist("list") if isinstance(v, str)]
    return SignupForm(field("email"), field("name"), lists, field(HONEYPOT))


def cross_site(web: Web, request: Request) -> str | None:
    """Why a browser's form post comes from a site that may not post it, or None.

    Browsers send Origin with every POST (`null` from sandboxed and privacy-sensitive
    contexts); without one, Sec-Fetch-Site still says whether the post is cross-site.
    A client that sends neither is not a browser acting for someone else."""
    if wants_json(request):
        return None
    origin = request.headers.get("origin")
    if origin is not None:
        if origin.lower().rstrip("/") in web.settings.signup_origins:
            return None
        return f"this form may only be sent from {web.settings.base_url}, not from {origin}"
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return f"this form may only be sent from {web.settings.base_url}"
    return None


def routes(web: Web) -> APIRouter:
    """/subscribe (GET a form, POST a form or JSON) and /confirm/{token}."""
    app = APIRouter()

    @app.get("/subscribe", response_class=HTMLResponse)
    def subscribe_page(
        request: Request,
        session: SessionDep,
        slugs: Annotated[list[str] | None, Query(alias="list")] = None,
    ) -> HTMLResponse:
        form = SignupForm("", "", slugs or [], "")
        return _signup_page(web, request, session, form, None, 200)

    @app.post("/subscribe")
    async def subscribe(request: Request) -> Response:
        arrived = time.monotonic()
        as_json = wants_json(request)
        # Everything that needs no body is checked before a byte of it is read.
        foreign = cross_site(web, request)
        if foreign is not None:
            log.warning("cross-site sign-up refused: %s", foreign)
            return web.message(request, 403, "Please sign up on our own page", foreign)
        refused = await run_in_threadpool(
            _limited, web, request, as_json, web.policy.per_ip, web.client_key(request)
        )
        if refused is not None:
            return refused
        try:
            form = await read_signup_form(request)
        except FieldError as exc:
            status = 415 if isinstance(exc, UnsupportedBodyError) else 400
            return _field_error(web, request, as_json, exc, None, status)
        response, accepted = await run_in_threadpool(_sign_up, web, request, as_json, form)
        if accepted:
            # The same answer at the same time for every address: the work done for a
            # new one (rows, a confirmation to queue) must not show in its timing.
            await asyncio.sleep(max(0.0, arrived + web.policy.answer_seconds - time.monotonic()))
        return response

    @app.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        # A GET changes state here, against the rule the unsubscribe and next-step
        # links follow: link scanners (Safe Links, antivirus gateways) fetch it too and
        # so may confirm for the reader. We accept that, as the industry does: a
        # scanner at the recipient's own provider still proves the email reached that
        # mailbox, and a second "click to confirm" button loses many real readers.
        # Confirming only ever moves unconfirmed → confirmed, never back from a leave.
        # One link confirms every list the signup asked for.
        try:
            claims = web.signer.verify(token, Purpose.confirm)
            outcomes = {
                list_id: confirm_pending(session, claims.subscriber_id, list_id)
                for list_id in claims.list_ids
            }
            session.commit()
        except (InvalidTokenError, NotFoundError) as exc:
            return web.invalid_link(request, str(exc))
        names = [
            mailing_list.name
            for list_id, outcome in outcomes.items()
            if outcome is not ConfirmOutcome.cancelled
            and (mailing_list := session.get(MailingList, list_id)) is not None
        ]
        # The link reached the reader's mailbox, so it may lead to their preferences.
        preferences = web.signer.sign(Purpose.preferences, claims.subscriber_id, claims.list_id)
        return web.page(
            request,
            "confirmed.html",
            title="Subscription confirmed",
            list_name=" and ".join(names) or "the newsletter",
            cancelled=not names,
            preferences_url=f"{web.settings.base_url}/preferences/{preferences}",
        )

    return app


def _signup_page(
    web: Web,
    request: Request,
    session: Session,
    form: SignupForm,
    error: FieldError | None,
    status: int,
) -> HTMLResponse:
    lists = session.scalars(
        select(MailingList).where(MailingList.public).order_by(MailingList.name, MailingList.id)
    ).all()
    return web.page(
        request, "subscribe.html", status, title="Subscribe", lists=lists, form=form, error=error
    )


def _limited(web: Web, request: Request, as_json: bool, limit: Limit, key: str) -> Response | None:
    """None when this hit is within the limit; else the refusal to answer with.

    Over the limit: 429 with Retry-After. When the limits' store does not answer:
    503, because without limits nothing may be sent.
    """
    try:
        decision = web.limiter.hit(limit, key)
    except RateLimiterUnavailableError as exc:
        log.error("signup refused: %s", exc)
        return _refusal(web, request, as_json, 503, 30, "Please try again in a minute.")
    if decision.allowed:
        return None
    metrics.count_signup("rate_limited")
    minutes = max(1, round(decision.retry_after / 60))
    message = f"Too many requests: please try again in {minutes} minute(s)."
    return _refusal(web, request, as_json, 429, decision.retry_after, message)


def _refusal(
    web: Web, request: Request, as_json: bool, status: int, retry_after: int, message: str
) -> Response:
    headers = {"Retry-After": str(retry_after)}
    if as_json:
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    response = web.message(request, status, "Too many requests", message)
    response.headers.update(headers)
    return response


def _field_error(
    web: Web,
    request: Request,
    as_json: bool,
    error: FieldError,
    form: SignupForm | None,
    status: int = 400,
) -> Response:
    metrics.count_signup("invalid")
    if as_json:
        body = {"error": str(error), "field": error.field, "reason": error.reason}
        return JSONResponse(body, status_code=status)
    with web.sessions() as session:
        return _signup_page(
            web, request, session, form or SignupForm("", "", [], ""), error, status
        )


def _accepted(web: Web, request: Request, as_json: bool) -> Response:
    """The one answer to every accepted signup, whatever the address's state."""
    if as_json:
        return JSONResponse({"status": "accepted", "message": ACCEPTED})
    return web.message(request, 200, "Thank you", ACCEPTED)


def _sign_up(web: Web, request: Request, as_json: bool, form: SignupForm) -> tuple[Response, bool]:
    """Validate, limit per address, record; queue the mail after the commit. Returns
    the answer, and whether it is the one answer of an accepted sign-up."""
    if form.honeypot:
        return _accepted(web, request, as_json), True  # a bot: look normal, do nothing
    with web.sessions() as session:
        try:
            signup = parse_signup(form.email, form.name, form.lists)
            lists = find_lists(session, signup.list_slugs)
        except FieldError as exc:
            return _field_error(web, request, as_json, exc, form), False
        refused = _limited(web, request, as_json, web.policy.per_address, signup.email)
        if refused is not None:
            return refused, False
        confirmation = request_subscription(session, signup, lists)
        session.commit()
    if confirmation is not None:
        web.send_confirmation(confirmation)
    return _accepted(web, request, as_json), True

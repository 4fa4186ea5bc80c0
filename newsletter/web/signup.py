"""Signing up (form and JSON) and confirming: /subscribe, /confirm/{token}.

The signup form answers the same, status and body, whatever the state of the
address (new, pending, confirmed, unsubscribed, suppressed), and the confirmation
email goes out after the answer, so neither the answer nor its timing tells a
stranger who is subscribed. See audience/signup.py for what happens in each state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList
from newsletter.audience.signup import FieldError, find_lists, parse_signup, request_subscription
from newsletter.audience.subscriptions import ConfirmOutcome, confirm_pending
from newsletter.audience.tokens import InvalidTokenError, Purpose
from newsletter.errors import NotFoundError
from newsletter.ratelimit import Limit, RateLimiterUnavailableError
from newsletter.services.confirmation import send_confirmation
from newsletter.web.common import SessionDep, Web, client_ip, wants_json

log = logging.getLogger(__name__)

HONEYPOT = "website"  # a field humans never see; bots fill it
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
        return value

    lists = data.get("list") or []
    if isinstance(lists, str):
        lists = [lists]
    if not isinstance(lists, list) or not all(isinstance(v, str) for v in lists):
        raise FieldError("list", "must be a list slug or an array of slugs")
    return SignupForm(string("email"), string("name"), lists, string(HONEYPOT))


async def read_signup_form(request: Request) -> SignupForm:
    """The signup's fields; FieldError for a body that is neither a form nor a JSON object."""
    if wants_json(request):
        try:
            data = await request.json()
        except ValueError as exc:
            raise FieldError("body", "not valid JSON") from exc
        return _json_signup(data)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        raise UnsupportedBodyError("body", "send a form or a JSON object")
    form = await request.form()

    def field(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""

    lists = [v for v in form.getlist("list") if isinstance(v, str)]
    return SignupForm(field("email"), field("name"), lists, field(HONEYPOT))


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
    async def subscribe(request: Request, background: BackgroundTasks) -> Response:
        as_json = wants_json(request)
        refused = await run_in_threadpool(
            _limited, web, request, as_json, web.policy.per_ip, client_ip(request)
        )
        if refused is not None:
            return refused
        try:
            form = await read_signup_form(request)
        except FieldError as exc:
            status = 415 if isinstance(exc, UnsupportedBodyError) else 400
            return _field_error(web, request, as_json, exc, None, status)
        return await run_in_threadpool(_sign_up, web, request, as_json, form, background)

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


def _sign_up(
    web: Web, request: Request, as_json: bool, form: SignupForm, background: BackgroundTasks
) -> Response:
    """Validate, limit per address, record; mail after the commit, after the answer."""
    if form.honeypot:
        return _accepted(web, request, as_json)  # a bot: look normal, do nothing
    with web.sessions() as session:
        try:
            signup = parse_signup(form.email, form.name, form.lists)
            lists = find_lists(session, signup.list_slugs)
        except FieldError as exc:
            return _field_error(web, request, as_json, exc, form)
        refused = _limited(web, request, as_json, web.policy.per_address, signup.email)
        if refused is not None:
            return refused
        confirmation = request_subscription(session, signup, lists)
        session.commit()
    if confirmation is not None:
        background.add_task(send_confirmation, web.signer, web.sender, confirmation)
    return _accepted(web, request, as_json)

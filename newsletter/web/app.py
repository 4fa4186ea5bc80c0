"""The public web app: signup with double opt-in, confirmation, one-click unsubscribe
(RFC 8058), editable preferences, the archive, health.

Subscriber-facing links carry signed tokens; the unsubscribe POST needs no cookie or
login and answers 200 without redirecting, as RFC 8058 requires, while a GET only
shows a page with a button (link scanners must not unsubscribe anyone).

The signup form answers the same, status and body, whatever the state of the
address (new, pending, confirmed, unsubscribed, suppressed), and the confirmation
email goes out after the answer, so neither the answer nor its timing tells a
stranger who is subscribed. See audience/signup.py for what happens in each state.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import available_timezones

from fastapi import BackgroundTasks, Depends, FastAPI, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from newsletter.audience.confirmation import ConfirmationSender, send_confirmation
from newsletter.audience.models import MailingList
from newsletter.audience.preferences import apply_preferences, load_preferences, parse_preferences
from newsletter.audience.signup import (
    FieldError,
    find_lists,
    parse_signup,
    request_subscription,
)
from newsletter.audience.subscriptions import (
    ConfirmOutcome,
    confirm_pending,
    memberships,
    unsubscribe,
)
from newsletter.audience.tokens import InvalidTokenError, Purpose, TokenSigner
from newsletter.bounces.web import router as bounce_webhooks
from newsletter.campaigns.models import Run, RunStatus
from newsletter.campaigns.runs import article_view
from newsletter.config import Settings
from newsletter.content.models import Article, Series
from newsletter.content.series import is_published, published_in_order
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.delivery.dkim import signer_from_settings
from newsletter.delivery.mailers import Mailer, make_mailer
from newsletter.errors import NotFoundError
from newsletter.rendering.preview import fill_html
from newsletter.rendering.render import Snapshot
from newsletter.rendering.slots import SlotTemplate, slot_values
from newsletter.sequences.engine import send_next_now
from newsletter.tasks.app import broker_problem
from newsletter.web.ratelimit import (
    Limit,
    RateLimiter,
    RateLimiterUnavailableError,
    make_rate_limiter,
)

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "web"
HONEYPOT = "website"  # a field humans never see; bots fill it
ACCEPTED = (
    "Thank you. Please check your inbox: if your subscription needs confirming, we have "
    "sent you an email with a link to follow."
)
# Pages holding a signed token must not leak it to other sites (Referer) or be framed.
PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


@dataclass(frozen=True)
class SignupPolicy:
    """The signup form's limits and the lifetime of its confirmation links."""

    per_ip: Limit
    per_address: Limit
    confirm_ttl_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SignupPolicy:
        def setting(name: str, default: float) -> float:
            return float(getattr(settings, name, default))

        return cls(
            per_ip=Limit(
                "signup-ip",
                int(setting("signup_limit_per_ip", 5)),
                setting("signup_limit_per_ip_seconds", 600),
            ),
            per_address=Limit(
                "signup-address",
                int(setting("signup_limit_per_address", 3)),
                setting("signup_limit_per_address_seconds", 86400),
            ),
            confirm_ttl_seconds=int(setting("confirm_ttl_seconds", 3 * 86400)),
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


def csrf_token(secret_key: str, preferences_token: str) -> str:
    """The preferences form's CSRF value: HMAC(secret, "csrf:" + preferences token)."""
    key = hashlib.sha256(b"newsletter-csrf:" + secret_key.encode()).digest()
    message = b"csrf:" + preferences_token.encode("utf-8", "replace")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def client_ip(request: Request) -> str:
    """The client's address; behind a proxy, uvicorn's --forwarded-allow-ips sets it."""
    return request.client.host if request.client else "unknown"


def wants_json(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


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


@cache
def timezone_names() -> list[str]:
    return sorted(available_timezones())


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


def create_app(
    settings: Settings,
    *,
    policy: SignupPolicy | None = None,
    rate_limiter: RateLimiter | None = None,
) -> FastAPI:
    """The app for these settings; the database engine lives as long as the app.

    `policy` and `rate_limiter` default to what the settings say (Redis counters when
    `settings.shared_redis_url` is set, else in-process ones).
    """
    engine = make_engine(settings.database_url)
    app = FastAPI(title="newsletter", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.sessions = make_sessionmaker(engine)
    app.include_router(bounce_webhooks)  # /webhooks/{ses,sendgrid,mailgun,postmark}
    policy = policy or SignupPolicy.from_settings(settings)
    dkim = signer_from_settings(settings)
    web = Web(
        settings=settings,
        signer=TokenSigner(settings.secret_key),
        templates=Jinja2Templates(directory=str(TEMPLATES)),
        sessions=app.state.sessions,
        policy=policy,
        limiter=rate_limiter or make_rate_limiter(settings.shared_redis_url),
        sender=ConfirmationSender(
            from_address=settings.from_address,
            base_url=settings.base_url,
            sender_domain=settings.sender_domain,
            ttl_seconds=policy.confirm_ttl_seconds,
            sign_message=dkim.sign if dkim is not None else (lambda data: data),
        ),
    )

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        checks = {"database": "ok", "broker": "ok"}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means unhealthy; say which
            checks["database"] = f"error: {type(exc).__name__}"
        if not settings.embedded_broker:
            problem = broker_problem(settings.broker_url)
            if problem:
                checks["broker"] = f"error: {problem}"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(checks, status_code=200 if healthy else 503)

    _signup_routes(app, web)
    _subscriber_routes(app, web)
    _archive_routes(app, web)
    return app


@dataclass(frozen=True)
class Web:
    """What the route handlers share."""

    settings: Settings
    signer: TokenSigner
    templates: Jinja2Templates
    sessions: sessionmaker[Session]
    policy: SignupPolicy
    limiter: RateLimiter
    sender: ConfirmationSender

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(
            request,
            name,
            {"base_url": self.settings.base_url, **context},
            status_code=status,
            headers=PAGE_HEADERS,
        )

    def message(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, "message.html", status, title=title, message=message)

    def invalid_link(self, request: Request, reason: str) -> HTMLResponse:
        return self.message(request, 400, "This link does not work", reason)

    def mailer(self) -> Mailer:
        return make_mailer(self.settings.mail_target)


# --- signup and confirmation ---------------------------------------------------------


def _signup_routes(app: FastAPI, web: Web) -> None:
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
        try:
            claims = web.signer.verify(token, Purpose.confirm)
            mailing_list = session.get(MailingList, claims.list_id)
            outcome = confirm_pending(session, claims.subscriber_id, claims.list_id)
            session.commit()
        except (InvalidTokenError, NotFoundError) as exc:
            return web.invalid_link(request, str(exc))
        # The link reached the reader's mailbox, so it may lead to their preferences.
        preferences = web.signer.sign(Purpose.preferences, claims.subscriber_id, claims.list_id)
        return web.page(
            request,
            "confirmed.html",
            title="Subscription confirmed",
            list_name=mailing_list.name if mailing_list else "the newsletter",
            cancelled=outcome is ConfirmOutcome.cancelled,
            preferences_url=f"{web.settings.base_url}/preferences/{preferences}",
        )


def _signup_page(
    web: Web,
    request: Request,
    session: Session,
    form: SignupForm,
    error: FieldError | None,
    status: int,
) -> HTMLResponse:
    lists = session.scalars(select(MailingList).order_by(MailingList.name, MailingList.id)).all()
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
        background.add_task(send_confirmation, web.signer, web.sender, web.mailer, confirmation)
    return _accepted(web, request, as_json)


# --- links in emails: unsubscribe, next step, preferences ----------------------------


def _subscriber_routes(app: FastAPI, web: Web) -> None:
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
        moved = send_next_now(session, claims.subscriber_id, claims.list_id, utcnow())
        session.commit()
        message = (
            "The next article is on its way; it should arrive within a few minutes."
            if moved
            else "You have every article of this series so far; the next one will come "
            "when it is published."
        )
        return web.message(request, 200, "Next article", message)

    _preferences_routes(app, web)


def _preferences_routes(app: FastAPI, web: Web) -> None:
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
    def save_preferences(
        request: Request,
        token: str,
        session: SessionDep,
        csrf: Annotated[str, Form()] = "",
        name: Annotated[str, Form()] = "",
        timezone: Annotated[str, Form()] = "",
        slugs: Annotated[list[str] | None, Form(alias="list")] = None,
        paused: Annotated[list[str] | None, Form()] = None,
    ) -> HTMLResponse:
        try:
            claims = web.signer.verify(token, Purpose.preferences)
        except InvalidTokenError as exc:
            return web.invalid_link(request, str(exc))
        expected = csrf_token(web.settings.secret_key, token)
        if not hmac.compare_digest(csrf.encode("utf-8"), expected.encode("ascii")):
            return web.message(
                request, 403, "Please try again", "This form expired; open the link again."
            )
        try:
            apply_preferences(
                session,
                claims.subscriber_id,
                parse_preferences(name, timezone, slugs or [], paused or []),
            )
            session.commit()
        except FieldError as exc:
            session.rollback()
            return show(request, session, claims.subscriber_id, token, 400, error=exc)
        except NotFoundError as exc:
            return web.invalid_link(request, str(exc))
        return show(request, session, claims.subscriber_id, token, saved=True)


# --- the archive --------------------------------------------------------------------

ARCHIVED_RUNS = (RunStatus.finished, RunStatus.sending)
NEUTRAL_SLOTS = {"name": "", "email": "", "unsubscribe_url": "#", "preferences_url": "#"}


@dataclass(frozen=True)
class ArchivedRun:
    run_id: int
    subject: str
    date: str


@dataclass(frozen=True)
class ArchivedArticle:
    slug: str
    title: str
    date: str
    part: int  # 1-based place among the series' published articles; 0 outside a series
    parts: int


@dataclass(frozen=True)
class ArchivedSeries:
    title: str
    articles: list[ArchivedArticle]


def _date(moment: Any) -> str:
    return f"{moment.day} {moment:%B %Y}" if moment else ""


def _subject(subject: str, fallbacks: dict[str, str] | None) -> str:
    """A run's frozen subject with its slots filled as for an anonymous reader."""
    template = SlotTemplate.compile(subject)
    values = dict.fromkeys(template.keys, "")
    values.update(slot_values(fallbacks or {}, NEUTRAL_SLOTS))
    return template.fill(values)


def archived_runs(session: Session) -> list[ArchivedRun]:
    """Every campaign run that went out (finished or still sending), newest first."""
    sent = func.coalesce(Run.started_at, Run.occurrence_at)
    rows = session.execute(
        select(
            Run.id,
            Run.snapshot["subject"].as_string(),
            Run.snapshot["fallbacks"],
            sent,
        )
        .where(
            Run.campaign_id.is_not(None),
            Run.status.in_(ARCHIVED_RUNS),
            Run.snapshot.is_not(None),
        )
        .order_by(sent.desc(), Run.id.desc())
    ).all()
    return [
        ArchivedRun(run_id, _subject(subject or "", fallbacks), _date(at))
        for run_id, subject, fallbacks, at in rows
    ]


def archived_articles(session: Session) -> tuple[list[ArchivedSeries], list[ArchivedArticle]]:
    """Published articles: per series in series order, then the rest newest first."""
    now = utcnow()
    series = []
    for each in session.scalars(select(Series).order_by(Series.title, Series.id)):
        ordered = published_in_order(session, each.id, now=now)
        if ordered:
            articles = [
                ArchivedArticle(a.slug, a.title, _date(a.published_at), i, len(ordered))
                for i, a in enumerate(ordered, start=1)
            ]
            series.append(ArchivedSeries(each.title, articles))
    loose = session.scalars(
        select(Article)
        .where(Article.series_id.is_(None), Article.published_at <= now)
        .order_by(Article.published_at.desc(), Article.id.desc())
    )
    return series, [ArchivedArticle(a.slug, a.title, _date(a.published_at), 0, 0) for a in loose]


def _archive_routes(app: FastAPI, web: Web) -> None:
    @app.get("/archive", response_class=HTMLResponse)
    def archive(request: Request, session: SessionDep) -> HTMLResponse:
        series, loose = archived_articles(session)
        return web.page(
            request,
            "archive.html",
            title="Archive",
            runs=archived_runs(session),
            series=series,
            articles=loose,
        )

    @app.get("/archive/runs/{run_id}", response_class=HTMLResponse)
    def archived_run(request: Request, run_id: int, session: SessionDep) -> HTMLResponse:
        run = session.get(Run, run_id)
        if run is None or run.snapshot is None:
            return web.message(request, 404, "Not found", "No such email.")
        return HTMLResponse(fill_html(Snapshot.from_json(run.snapshot), NEUTRAL_SLOTS))

    @app.get("/articles/{slug}", response_class=HTMLResponse)
    def article_page(request: Request, slug: str, session: SessionDep) -> HTMLResponse:
        article = session.scalar(select(Article).where(Article.slug == slug))
        if article is None or not is_published(article):
            return web.message(request, 404, "Not found", "No such article.")
        return web.page(
            request, "article.html", a=article_view(session, article, web.settings.base_url)
        )


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory newsletter.web.app:app_from_environment`."""
    from newsletter.config import load_settings

    return create_app(load_settings())

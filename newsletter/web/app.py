"""The public web app: one-click unsubscribe (RFC 8058), preferences, archive, health.

Subscriber-facing links carry signed tokens; the unsubscribe POST needs no cookie or
login and answers 200 without redirecting, as RFC 8058 requires, while a GET only
shows a page with a button (link scanners must not unsubscribe anyone).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from newsletter.audience.subscriptions import memberships, unsubscribe
from newsletter.audience.tokens import InvalidTokenError, Purpose, TokenSigner
from newsletter.campaigns.models import Run
from newsletter.campaigns.runs import article_view
from newsletter.config import Settings
from newsletter.content.models import Article
from newsletter.content.series import is_published
from newsletter.db import make_engine, make_sessionmaker, utcnow
from newsletter.errors import NotFoundError
from newsletter.rendering.preview import fill_html
from newsletter.rendering.render import Snapshot
from newsletter.sequences.engine import send_next_now
from newsletter.tasks.app import broker_problem

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "web"


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


def create_app(settings: Settings) -> FastAPI:
    """The app for these settings; the database engine lives as long as the app."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    signer = TokenSigner(settings.secret_key)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    app = FastAPI(title="newsletter", docs_url=None, redoc_url=None)

    app.state.sessions = sessions

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"base_url": settings.base_url, **context}, status_code=status
        )

    def invalid_link(request: Request, reason: str) -> HTMLResponse:
        return page(request, "message.html", 400, title="This link does not work", message=reason)

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

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        try:
            claims = signer.verify(token, Purpose.unsubscribe)
            subscriber, lists = memberships(session, claims.subscriber_id)
        except (InvalidTokenError, NotFoundError) as exc:
            return invalid_link(request, str(exc))
        current = next((m for m in lists if m.list_id == claims.list_id), None)
        return page(
            request, "unsubscribe.html", email=subscriber.email, membership=current, token=token
        )

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_now(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        # Both the RFC 8058 one-click POST (body List-Unsubscribe=One-Click, sent by the
        # mailbox provider) and the button on our own page land here.
        try:
            claims = signer.verify(token, Purpose.unsubscribe)
            mailing_list = unsubscribe(
                session, claims.subscriber_id, claims.list_id, source="unsubscribe link"
            )
            session.commit()
        except (InvalidTokenError, NotFoundError) as exc:
            return invalid_link(request, str(exc))
        return page(
            request,
            "message.html",
            title="You are unsubscribed",
            message=f"You will receive no more emails from {mailing_list.name}.",
        )

    @app.get("/next/{token}", response_class=HTMLResponse)
    def next_step_page(request: Request, token: str) -> HTMLResponse:
        try:
            signer.verify(token, Purpose.next_step)
        except InvalidTokenError as exc:
            return invalid_link(request, str(exc))
        return page(request, "next.html", token=token)

    @app.post("/next/{token}", response_class=HTMLResponse)
    def next_step_now(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        # A POST, like unsubscribing: a mail scanner following the link changes nothing.
        try:
            claims = signer.verify(token, Purpose.next_step)
        except InvalidTokenError as exc:
            return invalid_link(request, str(exc))
        moved = send_next_now(session, claims.subscriber_id, claims.list_id, utcnow())
        session.commit()
        message = (
            "The next article is on its way; it should arrive within a few minutes."
            if moved
            else "You have every article of this series so far; the next one will come "
            "when it is published."
        )
        return page(request, "message.html", title="Next article", message=message)

    @app.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences(request: Request, token: str, session: SessionDep) -> HTMLResponse:
        try:
            claims = signer.verify(token, Purpose.preferences)
            subscriber, lists = memberships(session, claims.subscriber_id)
        except (InvalidTokenError, NotFoundError) as exc:
            return invalid_link(request, str(exc))
        links = {
            m.list_id: signer.sign(Purpose.unsubscribe, subscriber.id, m.list_id) for m in lists
        }
        return page(
            request, "preferences.html", subscriber=subscriber, lists=lists, unsubscribe=links
        )

    @app.get("/archive/runs/{run_id}", response_class=HTMLResponse)
    def archived_run(request: Request, run_id: int, session: SessionDep) -> HTMLResponse:
        run = session.get(Run, run_id)
        if run is None or run.snapshot is None:
            return page(request, "message.html", 404, title="Not found", message="No such email.")
        neutral = {"name": "", "email": "", "unsubscribe_url": "#", "preferences_url": "#"}
        return HTMLResponse(fill_html(Snapshot.from_json(run.snapshot), neutral))

    @app.get("/articles/{slug}", response_class=HTMLResponse)
    def article_page(request: Request, slug: str, session: SessionDep) -> HTMLResponse:
        article = session.scalar(select(Article).where(Article.slug == slug))
        if article is None or not is_published(article):
            return page(request, "message.html", 404, title="Not found", message="No such article.")
        return page(request, "article.html", a=article_view(session, article, settings.base_url))

    return app


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory newsletter.web.app:app_from_environment`."""
    from newsletter.config import load_settings

    return create_app(load_settings())

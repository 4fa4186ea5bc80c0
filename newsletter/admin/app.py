"""The console app: its pages under /admin, its static files, its headers and errors.

Every response carries a strict Content-Security-Policy: scripts only from this
origin (the vendored htmx and our own console.js), no inline script, no inline
event handler, no eval, styles only from our stylesheet, frames only from this
origin (the email preview), forms posting only here, and no framing by anyone. The
email preview itself is a separate document with a policy of its own (its inline
styles, its images, no script at all, sandboxed). No error ever shows a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsletter.admin import (
    audience,
    auth,
    campaigns,
    content,
    home,
    ops,
    people,
    reports,
    segments,
    webhooks,
)
from newsletter.admin.common import (
    HERE,
    PREFIX,
    Assets,
    Console,
    CsrfRejected,
    Forbidden,
    LoginRequired,
    Missing,
    csrf_guard,
    redirect,
    render,
)
from newsletter.admin.i18n import _, install
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.errors import InvalidInputError, NewsletterError, NotFoundError
from newsletter.ratelimit import RateLimiter, make_rate_limiter
from newsletter.tasks.monitoring import QueueProbe

log = logging.getLogger(__name__)

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
STATIC_CACHE = "public, max-age=31536000, immutable"


def _when(value: datetime | str | None, with_zone: bool = True) -> str:
    """A UTC time for people: 2026-12-07 09:00 UTC."""
    if value is None or value == "":
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    text = moment.strftime("%Y-%m-%d %H:%M")
    return f"{text} UTC" if with_zone else text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        lstrip_blocks=True,
    )
    install(environment)
    environment.filters["when"] = _when
    environment.filters["duration"] = _duration
    return environment


def create_console_app(settings: Settings, *, rate_limiter: RateLimiter | None = None) -> FastAPI:
    """The console for these settings; the database engine lives as long as the app."""
    engine = make_engine(settings.database_url)
    # The ops page reads the Celery queue's length over one kept Redis connection.
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
    queue_probe = QueueProbe(settings.broker_url) if redis_broker else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()  # the connections go when the app stops, not when it is collected
        if queue_probe is not None:
            queue_probe.close()

    app = FastAPI(
        lifespan=lifespan,
        title="newsletter console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(csrf_guard)],
    )
    app.state.queue_probe = queue_probe
    app.state.console = Console(
        settings=settings,
        sessions=make_sessionmaker(engine),
        limiter=rate_limiter or make_rate_limiter(settings.shared_redis_url),
        templates=template_environment(),
        assets=Assets.scan(HERE / "static"),
    )
    for module in (
        auth,
        home,
        campaigns,
        audience,
        content,
        people,
        reports,
        ops,
        segments,
        webhooks,
    ):
        app.include_router(module.router, prefix=PREFIX)
    _add_static(app)
    _add_error_pages(app)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def _add_static(app: FastAPI) -> None:
    assets: Assets = app.state.console.assets

    @app.get(PREFIX, include_in_schema=False)
    def bare() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=308)

    @app.get(PREFIX + "/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        plain = assets.by_versioned.get(name)
        if plain is None:
            return Response(_("No such file."), status_code=404, media_type="text/plain")
        media = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
        suffix = "." + name.rsplit(".", 1)[-1]
        return FileResponse(
            assets.folder / plain,
            media_type=media.get(suffix, "application/octet-stream"),
            headers={"Cache-Control": STATIC_CACHE},
        )


def _add_error_pages(app: FastAPI) -> None:
    def page(
        request: Request, status: int, title: str, message: str, link: Missing | None = None
    ) -> Response:
        viewer = getattr(request.state, "viewer", None)
        return render(
            request, "error.html", viewer, title=title, status=status, message=message, link=link
        )

    @app.exception_handler(LoginRequired)
    def login_required(request: Request, exc: LoginRequired) -> Response:
        target = PREFIX + "/login?next=" + exc.next_path
        if request.headers.get("hx-request") == "true":
            # htmx follows no 303 for a whole page: tell it to load the login page.
            return Response(status_code=204, headers={"HX-Redirect": target})
        return redirect(target)

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:
        return page(request, 403, _("Not allowed"), exc.message)

    @app.exception_handler(CsrfRejected)
    def csrf_rejected(request: Request, exc: CsrfRejected) -> Response:
        message = _(
            "This form did not carry the security token of your session (it may be "
            "from an old page, or from another site). Nothing was changed: reload the "
            "page and try again."
        )
        return page(request, 403, _("Form refused"), message)

    @app.exception_handler(Missing)
    def missing(request: Request, exc: Missing) -> Response:
        return page(request, 404, _("Not found"), exc.message, link=exc)

    @app.exception_handler(NotFoundError)
    def not_found(request: Request, exc: NotFoundError) -> Response:
        return page(request, 404, _("Not found"), str(exc))

    @app.exception_handler(InvalidInputError)
    def invalid(request: Request, exc: InvalidInputError) -> Response:
        return page(request, 422, _("Cannot do that"), str(exc))

    @app.exception_handler(NewsletterError)
    def refused(request: Request, exc: NewsletterError) -> Response:
        return page(request, 422, _("Cannot do that"), str(exc))

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {error.get('msg', '')}")
        return page(request, 422, _("Cannot do that"), "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: _("Not found"), 405: _("Not allowed here")}
        detail = str(exc.detail) if exc.status_code != 404 else _("There is no such page.")
        return page(request, exc.status_code, titles.get(exc.status_code, _("Error")), detail)

    @app.exception_handler(Exception)
    def crashed(request: Request, exc: Exception) -> Response:
        log.exception("console: %s %s failed", request.method, request.url.path)
        response = page(
            request, 500, _("Something went wrong"), _("It is logged; nothing more was changed.")
        )
        response.headers.update(HEADERS)
        return response

"""The staff API app: `/api/v1`, its OpenAPI document and docs, behind authentication.

Nothing of it answers without a token or a session: not the routes, not
`/api/v1/openapi.json`, not `/api/v1/docs` (an HTML reference rendered here from the
OpenAPI document: no script, no third-party asset). Errors are RFC 9457 problem
documents naming the field; no traceback ever leaves the process.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from newsletter.api import admin, audience, auth, campaigns, content, ops, segments, webhooks
from newsletter.api.common import (
    PROBLEM,
    Api,
    ApiError,
    CallerDep,
    errors_of,
    problem,
    rate_limit_headers,
)
from newsletter.api.schemas import Problem
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.errors import DeliveryError, InvalidInputError, NewsletterError, NotFoundError
from newsletter.metrics import RequestMetrics
from newsletter.ratelimit import RateLimiter, RateLimiterUnavailableError, make_rate_limiter
from newsletter.tasks.monitoring import ServiceCollector

PREFIX = "/api/v1"
log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
ERROR_STATUSES = (401, 403, 404, 409, 412, 422, 428, 429)


def _problem_responses() -> dict[int | str, dict[str, Any]]:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {"description": problem_title(status), "content": {PROBLEM: {"schema": ref}}}
        for status in ERROR_STATUSES
    }


def problem_title(status: int) -> str:
    from newsletter.api.common import TITLES

    return TITLES.get(status, "Error")


def create_staff_app(settings: Settings, *, rate_limiter: RateLimiter | None = None) -> FastAPI:
    """The staff API for these settings; the database engine lives as long as the app."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    collector = ServiceCollector(settings, sessions)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        collector.close()
        engine.dispose()  # the connections go when the app stops, not when it is collected

    app = FastAPI(
        lifespan=lifespan,
        title="newsletter staff API",
        version="1",
        description="Everything the `newsletter` CLI does, over HTTP. Authenticate with "
        "`Authorization: Bearer nl_…` or a session from POST /api/v1/auth/login.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.collector = collector
    app.state.api = Api(
        settings=settings,
        sessions=sessions,
        limiter=rate_limiter or make_rate_limiter(settings.shared_redis_url),
    )
    routes = APIRouter(prefix=PREFIX, responses=_problem_responses())
    # ops before campaigns: /runs/stalled is not /runs/{run_id}.
    for module in (auth, admin, audience, segments, content, ops, campaigns, webhooks):
        routes.include_router(module.router)
    app.include_router(routes)
    _add_error_handlers(app)
    _add_documents(app)
    app.add_middleware(RequestMetrics)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        limited = getattr(request.state, "ratelimit", None)
        if limited is not None:
            for name, value in rate_limit_headers(*limited).items():
                response.headers[name] = value
        return response

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else []
        return problem(exc.status, exc.detail, title=exc.title, errors=errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = errors_of(exc.errors())
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem(422, detail or "the request is not valid", errors=errors)

    @app.exception_handler(NotFoundError)
    def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(InvalidInputError)
    def invalid_input(request: Request, exc: InvalidInputError) -> JSONResponse:
        field = getattr(exc, "field", None)
        errors = [{"field": str(field), "message": str(exc)}] if field else []
        return problem(422, str(exc), errors=errors)

    @app.exception_handler(DeliveryError)
    def delivery_failed(request: Request, exc: DeliveryError) -> JSONResponse:
        return problem(502, f"the mail server did not take it: {exc}")

    @app.exception_handler(RateLimiterUnavailableError)
    def limiter_down(request: Request, exc: RateLimiterUnavailableError) -> JSONResponse:
        return problem(503, "rate limits are unavailable; retry soon", headers={"Retry-After": "5"})

    @app.exception_handler(NewsletterError)
    def refused(request: Request, exc: NewsletterError) -> JSONResponse:
        return problem(422, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("staff API: %s %s failed", request.method, request.url.path)
        response = problem(500, "something went wrong on our side; it is logged")
        response.headers.update(SECURITY_HEADERS)
        return response


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        nested = schema["components"]["schemas"]["Problem"].pop("$defs", {})
        schema["components"]["schemas"].update(nested)
        schema["components"]["securitySchemes"] = {
            "token": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "nl_session"},
        }
        schema["security"] = [{"token": []}, {"session": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def _add_documents(app: FastAPI) -> None:
    @app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
    def openapi(caller: CallerDep) -> JSONResponse:
        return JSONResponse(_openapi(app))

    @app.get(f"{PREFIX}/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs(caller: CallerDep) -> HTMLResponse:
        return HTMLResponse(render_docs(_openapi(app)))


def render_docs(schema: dict[str, Any]) -> str:
    """A plain HTML reference of every operation: method, path, summary, parameters,
    body and answers, with links to the schemas."""
    e = html.escape
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>{e(schema['info']['title'])}</title>",
        f"<h1>{e(schema['info']['title'])}</h1><p>{e(schema['info'].get('description', ''))}</p>",
        '<p>The machine-readable document: <a href="openapi.json">openapi.json</a>.</p>',
    ]
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            parts.append(
                f"<h2 id={e(op.get('operationId', ''))}>{e(method.upper())} {e(path)}</h2>"
            )
            parts.append(f"<p>{e(op.get('summary', ''))}</p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<p>Parameters:</p><ul>")
                for p in params:
                    need = " (required)" if p.get("required") else ""
                    parts.append(f"<li><code>{e(p['name'])}</code> in {e(p['in'])}{need}</li>")
                parts.append("</ul>")
            body = op.get("requestBody", {}).get("content", {})
            for media, spec in body.items():
                ref = spec.get("schema", {}).get("$ref", "")
                name = ref.rsplit("/", 1)[-1]
                parts.append(f"<p>Body ({e(media)}): <a href=#schema-{e(name)}>{e(name)}</a></p>")
            answers = ", ".join(e(str(code)) for code in op.get("responses", {}))
            parts.append(f"<p>Answers: {answers}</p>")
    parts.append("<h2>Schemas</h2>")
    import json

    for name, spec in schema.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id=schema-{e(name)}>{e(name)}</h3>")
        parts.append(f"<pre>{e(json.dumps(spec, indent=2))}</pre>")
    return "\n".join(parts)


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory newsletter.api.app:app_from_environment`."""
    from newsletter.config import load_settings

    return create_staff_app(load_settings())

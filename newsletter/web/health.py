"""Health: /healthz answers whether the database and the broker answer."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from newsletter.config import Settings
from newsletter.tasks.app import broker_problem


def routes(settings: Settings, engine: Engine) -> APIRouter:
    app = APIRouter()

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

    return app

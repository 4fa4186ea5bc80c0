"""Health: /healthz (the process answers) and /readyz (it can do its work).

`/healthz` is a liveness probe: it touches nothing, so a database or broker outage
never gets the web processes restarted in a loop. `/readyz` is the readiness probe:
the database answers, its schema is at this version's head migration, and the broker
answers (through one kept connection, not a new one per probe). A failing check
answers 503 and names the dependency in words, never the library's exception (the
answer is public; details go to the log).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from newsletter.db import head_revisions, schema_problem
from newsletter.tasks.app import BrokerProbe

log = logging.getLogger(__name__)


def routes(engine: Engine, broker: BrokerProbe | None) -> APIRouter:
    """`broker` is None for the embedded broker, which lives inside each process."""
    app = APIRouter()
    heads = head_revisions()

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        checks = {"database": "ok", "migrations": "ok", "broker": "ok"}
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            problem = schema_problem(engine, heads)
        except Exception as exc:  # any failure means "not reachable"; the log says which
            log.warning("readiness: the database does not answer: %s", exc)
            checks["database"] = "unreachable"
            checks["migrations"] = "unknown"
        else:
            if problem is not None:
                log.warning("readiness: %s", problem)
                checks["migrations"] = "not at the head revision: run newsletter db upgrade"
        if broker is not None:
            broker_down = broker.problem()
            if broker_down is not None:
                log.warning("readiness: the broker does not answer: %s", broker_down)
                checks["broker"] = "unreachable"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(checks, status_code=200 if ready else 503)

    return app

"""The long-running processes: `newsletter worker`, `scheduler run|tick`, `serve`."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated, Any

import typer

from newsletter.cli.common import (
    JsonOption,
    check_schema,
    console,
    print_json,
    settings,
)
from newsletter.config import Settings
from newsletter.delivery.startup import check_start_settings
from newsletter.errors import BrokerUnavailableError
from newsletter.logs import configure_logging

scheduler = typer.Typer(help="The scheduler process.", no_args_is_help=True)


def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: str = "INFO",
) -> None:
    """Start a Celery worker (the same as `celery -A worker worker`); extra args go to Celery."""
    from newsletter.tasks.app import configure, require_broker
    from newsletter.tasks.monitoring import start_metrics_server

    cfg = settings()
    if cfg.embedded_broker:
        raise BrokerUnavailableError(
            "NEWSLETTER_BROKER_URL is the in-memory broker, which only works inside one "
            "process: set it to redis://… to run separate workers, or use "
            "`newsletter scheduler run`, which runs a worker in-process"
        )
    check_start_settings(cfg)
    check_schema(cfg)
    require_broker(cfg)
    celery_app = configure(cfg)
    configure_logging(cfg.log_format)
    if cfg.metrics_port:
        start_metrics_server(cfg.metrics_port)  # the workers' counters, added up
    celery_app.worker_main(
        ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", *ctx.args]
    )


@scheduler.command("run")
def scheduler_run() -> None:
    """Tick every few seconds until SIGTERM; with the in-memory broker, also run a worker."""
    from newsletter.tasks.app import configure, embedded_worker, require_broker, runtime
    from newsletter.tasks.monitoring import start_metrics_server
    from newsletter.tasks.scheduler import Stopper, run_forever

    cfg = settings()
    check_schema(cfg)
    check_start_settings(cfg, journal=cfg.embedded_broker)
    require_broker(cfg)
    configure_logging(cfg.log_format)
    configure(cfg)
    if cfg.metrics_port:
        start_metrics_server(cfg.metrics_port)
    stopper = Stopper()
    stopper.install()
    if cfg.embedded_broker:
        with embedded_worker():
            # Celery's worker set-up lowers the root logger to WARNING; keep ours.
            logging.getLogger("newsletter").setLevel(logging.INFO)
            run_forever(runtime(), stopper)
    else:
        run_forever(runtime(), stopper)


@scheduler.command("tick")
def scheduler_tick(
    at: Annotated[
        str | None,
        typer.Option(help="Act as if it were this ISO time (UTC unless an offset is given)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run exactly one scheduler tick; with the in-memory broker also run the work it enqueued."""
    from newsletter.campaigns.service import parse_local_time
    from newsletter.tasks.app import configure, runtime
    from newsletter.tasks.scheduler import tick

    cfg = settings()
    check_schema(cfg)
    check_start_settings(cfg, journal=cfg.embedded_broker)
    celery_app = configure(cfg)
    if cfg.embedded_broker:
        # No worker process to hand work to: run what the tick enqueues right here.
        celery_app.conf.task_always_eager = True
    now = parse_local_time(at, "UTC") if at else None
    report = tick(runtime(), now)
    data = {
        "started_runs": report.started_runs,
        "sequence_steps": report.sequence_steps,
        "retried_chunks": len(report.retried_chunks),
        "finished_runs": report.finished_runs,
    }
    if as_json:
        print_json(data)
    else:
        console.print(
            f"tick: started runs {report.started_runs or '-'}, "
            f"sequence steps {report.sequence_steps}, retried chunks "
            f"{len(report.retried_chunks)}, finished runs {report.finished_runs or '-'}",
        )


class Only(StrEnum):
    public = "public"
    staff = "staff"


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    only: Annotated[
        Only | None,
        typer.Option(
            help="public: subscribers' pages only; staff: the staff API (/api/v1) and the "
            "console (/admin) only. Default: all of them."
        ),
    ] = None,
) -> None:
    """Serve the public web app (unsubscribe, preferences, archive, /healthz), the staff
    API (/api/v1) and the staff console (/admin), in one process or, with --only, apart."""
    import uvicorn

    from newsletter.db import make_engine, make_sessionmaker
    from newsletter.tasks.monitoring import ServiceCollector, start_metrics_server

    cfg = settings()
    check_schema(cfg)
    check_start_settings(cfg, journal=False)
    configure_logging(cfg.log_format)
    if cfg.metrics_port:
        # The database and broker gauges are served by `serve` (one target per stack
        # sees them); workers and schedulers serve their counters only.
        engine = make_engine(cfg.database_url)
        collector = ServiceCollector(cfg, make_sessionmaker(engine))
        start_metrics_server(cfg.metrics_port, collector=collector)
    # uvicorn would believe X-Forwarded-For from loopback by default: anyone on this
    # machine could then pick the address their sign-ups are counted under. The app
    # reads the header itself, from NEWSLETTER_TRUSTED_PROXIES only.
    uvicorn.run(
        build_app(cfg, only),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=False,
        server_header=False,
        # uvicorn's loggers (its access log too) go through ours: the format of
        # NEWSLETTER_LOG_FORMAT, tokens and addresses redacted.
        log_config=None,
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def build_app(cfg: Settings, only: Only | None = None) -> Any:
    """The ASGI app `serve` runs: the public app, the staff side (the API at /api/…
    and the console at /admin/…), or both, split by path; nothing else of the staff
    side is reachable."""
    from newsletter.admin.app import create_console_app
    from newsletter.api.app import create_staff_app
    from newsletter.web.app import create_app

    if only is Only.public:
        return create_app(cfg)
    api = create_staff_app(cfg)
    console = create_console_app(cfg)
    fallback = create_app(cfg) if only is None else api

    apps = [api, console] if fallback is api else [api, console, fallback]

    async def split(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespans(apps, scope, receive, send)
            return
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if _under(path, "/api"):
            app = api
        elif _under(path, "/admin"):
            app = console
        else:
            app = fallback
        await app(scope, receive, send)

    return split


async def _lifespans(apps: list[Any], scope: Any, receive: Any, send: Any) -> None:
    """Start and stop every app the server runs, not only the first: each disposes of
    its database engine when it stops. The server hears "complete" once all have."""
    import asyncio

    inboxes: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in apps]
    outboxes: list[asyncio.Queue[Any]] = [asyncio.Queue() for _ in apps]
    tasks = [
        asyncio.create_task(app(scope, inbox.get, outbox.put))
        for app, inbox, outbox in zip(apps, inboxes, outboxes, strict=True)
    ]
    for phase in ("startup", "shutdown"):
        message = await receive()
        for inbox in inboxes:
            await inbox.put(message)
        answers = [await outbox.get() for outbox in outboxes]
        failed = [a for a in answers if a["type"].endswith(".failed")]
        await send(failed[0] if failed else {"type": f"lifespan.{phase}.complete"})
        if failed:
            for task in tasks:  # the server stops at once: nothing more will come
                task.cancel()
            break
    await asyncio.gather(*tasks, return_exceptions=True)

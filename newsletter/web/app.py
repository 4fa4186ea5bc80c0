"""The public web app: signup with double opt-in, confirmation, one-click unsubscribe
(RFC 8058), editable preferences, the archive, tracked links and the open pixel,
bounce webhooks, health.

Each page family lives in a module of its own (signup, subscriber, archive, tracking,
webhooks, health); this one wires them to one app, its database engine, the guards and headers
every response passes through (web/guards.py), and the queue that sends confirmation
emails outside of requests (web/background.py). No API schema or docs are served:
the public side has nothing to document to strangers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from newsletter.audience.signup import Confirmation
from newsletter.audience.tokens import TokenSigner
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.metrics import RequestMetrics
from newsletter.ratelimit import RateLimiter, make_rate_limiter
from newsletter.rendering.library import template_library
from newsletter.services.confirmation import ConfirmationSender, send_confirmation
from newsletter.tasks.app import BrokerProbe
from newsletter.web import archive, health, signup, subscriber, tracking
from newsletter.web.background import BackgroundQueue
from newsletter.web.common import SignupPolicy, Web
from newsletter.web.guards import RequestGuard, SecurityHeaders, security_headers
from newsletter.web.logs import redact_access_log
from newsletter.web.webhooks import router as bounce_webhooks

# On shutdown, confirmations still queued get this long to go out.
DRAIN_SECONDS = 10.0


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
    confirmations = BackgroundQueue("confirmations")
    broker = None if settings.embedded_broker else BrokerProbe(settings.broker_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        confirmations.drain(DRAIN_SECONDS)
        if broker is not None:
            broker.close()
        engine.dispose()  # the database's connections go back when the app stops

    app = FastAPI(
        title="newsletter", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.state.settings = settings
    app.state.sessions = make_sessionmaker(engine)
    app.state.confirmations = confirmations
    policy = policy or SignupPolicy.from_settings(settings)
    library = template_library(settings.templates_dir)
    signer = TokenSigner(settings.secret_key, settings.old_secret_keys)
    web = Web(
        settings=settings,
        signer=signer,
        templates=Jinja2Templates(env=library.web_environment()),
        sessions=app.state.sessions,
        policy=policy,
        limiter=rate_limiter or make_rate_limiter(settings.shared_redis_url),
        send_confirmation=_confirmation_dispatch(settings, signer, policy, confirmations),
    )
    app.include_router(health.routes(engine, broker))
    app.include_router(signup.routes(web))
    app.include_router(subscriber.routes(web))
    app.include_router(archive.routes(web))
    app.include_router(tracking.routes(web))  # /t/c/{token}, /t/o/{token}.gif
    app.include_router(bounce_webhooks)  # /webhooks/{ses,sendgrid,mailgun,postmark}
    # The last added runs first: headers go on every answer, the guards' own too.
    app.add_middleware(RequestGuard, limit_for=partial(_body_limit, settings))
    app.add_middleware(
        SecurityHeaders, headers=security_headers(settings.base_url.startswith("https://"))
    )
    # Outermost: every answer is counted and timed, the guards' refusals too. The
    # counts are served by the staff side only (/api/v1/metrics, NEWSLETTER_METRICS_PORT).
    app.add_middleware(RequestMetrics)
    redact_access_log()
    return app


def _body_limit(settings: Settings, path: str) -> int:
    if path.startswith("/webhooks/"):
        return settings.webhook_max_body_bytes
    return settings.max_body_bytes


def _confirmation_dispatch(
    settings: Settings, signer: TokenSigner, policy: SignupPolicy, queue: BackgroundQueue
) -> Callable[[Confirmation], None]:
    """How a confirmation leaves a request: queued here, then sent by a thread of the
    queue (embedded broker) or handed to the Celery workers (a real broker). Either
    way the request only puts it in a bounded queue and answers."""
    if settings.embedded_broker:
        sender = ConfirmationSender.from_settings(settings, policy.confirm_ttl_seconds)

        def send_here(confirmation: Confirmation) -> None:
            queue.submit(partial(send_confirmation, signer, sender, confirmation))

        return send_here

    from newsletter.tasks.app import configure
    from newsletter.tasks.jobs import enqueue_confirmation

    configure(settings)

    def hand_to_workers(confirmation: Confirmation) -> None:
        queue.submit(partial(enqueue_confirmation, confirmation))

    return hand_to_workers


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory newsletter.web.app:app_from_environment` (run it with
    `--no-proxy-headers`: NEWSLETTER_TRUSTED_PROXIES decides whose X-Forwarded-For
    counts)."""
    from newsletter.config import load_settings

    return create_app(load_settings())

"""The public web app: signup with double opt-in, confirmation, one-click unsubscribe
(RFC 8058), editable preferences, the archive, tracked links and the open pixel,
bounce webhooks, health.

Each page family lives in a module of its own (signup, subscriber, archive, tracking,
webhooks, health); this one wires them to one app and its database engine.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from newsletter.audience.tokens import TokenSigner
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from newsletter.ratelimit import RateLimiter, make_rate_limiter
from newsletter.rendering.library import template_library
from newsletter.services.confirmation import ConfirmationSender
from newsletter.web import archive, health, signup, subscriber, tracking
from newsletter.web.common import SignupPolicy, Web
from newsletter.web.webhooks import router as bounce_webhooks


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
    # Subscribers' pages document nothing: no /openapi.json, no /docs.
    app = FastAPI(title="newsletter", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.sessions = make_sessionmaker(engine)
    policy = policy or SignupPolicy.from_settings(settings)
    library = template_library(settings.templates_dir)
    web = Web(
        settings=settings,
        signer=TokenSigner(settings.secret_key, settings.old_secret_keys),
        templates=Jinja2Templates(env=library.web_environment()),
        sessions=app.state.sessions,
        policy=policy,
        limiter=rate_limiter or make_rate_limiter(settings.shared_redis_url),
        sender=ConfirmationSender.from_settings(settings, policy.confirm_ttl_seconds),
    )
    app.include_router(health.routes(settings, engine))
    app.include_router(signup.routes(web))
    app.include_router(subscriber.routes(web))
    app.include_router(archive.routes(web))
    app.include_router(tracking.routes(web))  # /t/c/{token}, /t/o/{token}.gif
    app.include_router(bounce_webhooks)  # /webhooks/{ses,sendgrid,mailgun,postmark}
    return app


def app_from_environment() -> FastAPI:
    """For `uvicorn --factory newsletter.web.app:app_from_environment`."""
    from newsletter.config import load_settings

    return create_app(load_settings())

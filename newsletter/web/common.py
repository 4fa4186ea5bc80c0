"""What every page family of the public web app shares: the `Web` context handed to
route handlers, page rendering with the security headers, sessions, the client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from newsletter.audience.tokens import TokenSigner
from newsletter.config import Settings
from newsletter.ratelimit import Limit, RateLimiter
from newsletter.services.confirmation import ConfirmationSender

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
        return cls(
            per_ip=Limit(
                "signup-ip", settings.signup_limit_per_ip, settings.signup_limit_per_ip_seconds
            ),
            per_address=Limit(
                "signup-address",
                settings.signup_limit_per_address,
                settings.signup_limit_per_address_seconds,
            ),
            confirm_ttl_seconds=settings.confirm_ttl_seconds,
        )


def client_ip(request: Request) -> str:
    """The client's address; behind a proxy, uvicorn's --forwarded-allow-ips sets it."""
    return request.client.host if request.client else "unknown"


def wants_json(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


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
            f"web/{name}",
            {"base_url": self.settings.base_url, **context},
            status_code=status,
            headers=PAGE_HEADERS,
        )

    def message(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, "message.html", status, title=title, message=message)

    def invalid_link(self, request: Request, reason: str) -> HTMLResponse:
        return self.message(request, 400, "This link does not work", reason)

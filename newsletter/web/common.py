"""What every page family of the public web app shares: the `Web` context handed to
route handlers, page rendering with the security headers, sessions, the client."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from newsletter.audience.signup import Confirmation, FieldError
from newsletter.audience.tokens import TokenSigner
from newsletter.config import IpNetwork, Settings
from newsletter.ratelimit import Limit, RateLimiter

# Pages holding a signed token must not leak it to other sites (Referer) or be framed
# (every response also gets these from web/guards.py; a page states them anyway).
PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
# Seconds an accepted sign-up takes to answer at least, whatever the address's state.
SIGNUP_ANSWER_SECONDS = 0.15


@dataclass(frozen=True)
class SignupPolicy:
    """The signup form's limits and the lifetime of its confirmation links."""

    per_ip: Limit
    per_address: Limit
    confirm_ttl_seconds: int
    # An accepted sign-up is answered no sooner than this after it arrived, so the
    # time of the answer tells nobody whether the address was new, known or suppressed.
    answer_seconds: float = SIGNUP_ANSWER_SECONDS

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


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str, forwarded_for: str, trusted: Sequence[IpNetwork]) -> str:
    """Whose request this is: the connecting peer, unless the peer is a trusted proxy.

    Then X-Forwarded-For is read from the right (each proxy appends the address it
    saw), past every trusted proxy, to the first address nobody of ours vouches for.
    Anything else in the header is whatever the client chose to write, so it is
    ignored. Not knowing the peer gives "unknown".
    """
    current = _address(peer)
    if current is None:
        return peer or "unknown"
    hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
    while hops and any(current in network for network in trusted):
        previous = _address(hops.pop())
        if previous is None:
            break
        current = previous
    return str(current)


def rate_key(address: str) -> str:
    """The key a client address is counted under: an IPv4 address, or the /64 an IPv6
    address is in (one household or machine is given a whole /64 to pick from)."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address


def client_ip(request: Request, trusted: Sequence[IpNetwork] = ()) -> str:
    """The client's address (see `client_address`); the server must not rewrite it
    from forwarded headers itself (`newsletter serve` runs uvicorn without them)."""
    peer = request.client.host if request.client else ""
    return client_address(peer, request.headers.get("x-forwarded-for", ""), trusted)


def wants_json(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/json")


def without_nul(field: str, value: str) -> str:
    """`value`, or FieldError naming the field when it holds a NUL character (no
    database column takes one)."""
    if "\x00" in value:
        raise FieldError(field, "contains a NUL character")
    return value


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
    # Hands a confirmation email over to be sent later (never inside the request):
    # returns at once, whatever the relay or the broker are doing.
    send_confirmation: Callable[[Confirmation], None]

    def client_key(self, request: Request) -> str:
        """What the per-client rate limit counts this request under."""
        return rate_key(client_ip(request, self.settings.trusted_proxy_networks))

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

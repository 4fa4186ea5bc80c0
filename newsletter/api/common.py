"""What every route of the staff API shares: who is calling (a token or a session),
scope checks, problem responses (RFC 9457), keyset pages, rate limits, and the unit
of work every write goes through (audit actor, Idempotency-Key, one commit)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from newsletter.accounts import idempotency
from newsletter.accounts.audit import Actor, act_as
from newsletter.accounts.roles import effective_scopes
from newsletter.accounts.sessions import COOKIE, csrf_token, session_user
from newsletter.accounts.tokens import token_user
from newsletter.audience.lists import get_list
from newsletter.config import Settings
from newsletter.ratelimit import Decision, Limit, RateLimiter

T = TypeVar("T")
# Ids of rows: integer columns, so larger numbers are refused as invalid, not looked up.
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
IdQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
SESSION_COOKIE = COOKIE
CSRF_HEADER = "X-CSRF-Token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBLEM = "application/problem+json"
MAX_LIMIT = 200


class ApiError(Exception):
    """An answer other than success: a status, a title and what went wrong."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str = "",
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.field = field
        self.headers = headers or {}


TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    415: "Unsupported media type",
    422: "Invalid input",
    428: "Precondition required",
    429: "Too many requests",
    500: "Internal error",
    502: "Bad gateway",
    503: "Unavailable",
}


def problem(
    status: int,
    detail: str,
    *,
    title: str = "",
    errors: Sequence[dict[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "errors": list(errors),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


@dataclass(frozen=True)
class Api:
    """What the route handlers share, built once per app."""

    settings: Settings
    sessions: sessionmaker[Session]
    limiter: RateLimiter

    @property
    def api_limit(self) -> Limit:
        return Limit("api", self.settings.api_rate_limit, 60.0)


@dataclass
class Caller:
    """An authenticated caller: a user through a session or one of their tokens."""

    user_id: int
    email: str
    role: str
    via: str  # "token" or "session"
    scopes: frozenset[str]
    list_ids: list[int] | None
    label: str
    ip: str
    token_id: int | None = None
    cookie: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        """Whose Idempotency-Keys these are."""
        return f"token:{self.token_id}" if self.token_id is not None else f"user:{self.user_id}"

    @property
    def actor(self) -> Actor:
        return Actor(self.label, self.via, self.user_id, self.ip)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ApiError(403, f"this needs the {scope} scope", field="scope")

    def check_list_ids(self, list_ids: Sequence[int], what: str = "lists") -> None:
        """403 unless a list-scoped user may work on every one of these lists."""
        if self.list_ids is None:
            return
        outside = set(list_ids) - set(self.list_ids)
        if outside:
            raise ApiError(403, f"you may not work on some of these {what}", field="lists")

    def check_lists(self, session: Session, slugs: Sequence[str]) -> None:
        if self.list_ids is not None:
            self.check_list_ids([get_list(session, slug).id for slug in slugs])


def api_of(request: Request) -> Api:
    api: Api = request.app.state.api
    return api


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(request: Request) -> Caller:
    """The caller of this request, rate-limited; 401 without a live token or session.

    A token comes as `Authorization: Bearer nl_…`; a session as the `nl_session`
    cookie, and then an unsafe method also needs the session's X-CSRF-Token."""
    api = api_of(request)
    ip = client_ip(request)
    authorization = request.headers.get("authorization", "")
    cookie = request.cookies.get(SESSION_COOKIE, "")
    with api.sessions() as session:
        if authorization:
            scheme, _, secret = authorization.partition(" ")
            found = token_user(session, secret.strip()) if scheme.lower() == "bearer" else None
            if found is None:
                raise ApiError(
                    401,
                    "the token is unknown, revoked or expired",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            token, user = found
            caller = Caller(
                user.id,
                user.email,
                user.role,
                "token",
                effective_scopes(user.role, list(token.scopes)),
                user.list_ids,
                f"{user.email} (token {token.prefix})",
                ip,
                token_id=token.id,
            )
        elif cookie:
            live = session_user(session, cookie)
            if live is None:
                raise ApiError(401, "the session has ended; log in again")
            if request.method in UNSAFE and request.headers.get(CSRF_HEADER, "") != csrf_token(
                api.settings.secret_key, cookie
            ):
                raise ApiError(403, f"a session's {request.method} needs its {CSRF_HEADER} header")
            caller = Caller(
                live.id,
                live.email,
                live.role,
                "session",
                effective_scopes(live.role),
                live.list_ids,
                f"{live.email} (session)",
                ip,
                cookie=cookie,
            )
        else:
            raise ApiError(
                401,
                "log in, or send a token: Authorization: Bearer nl_…",
                headers={"WWW-Authenticate": "Bearer"},
            )
        session.commit()  # last-used times
    decision = api.limiter.hit(api.api_limit, caller.owner)
    request.state.ratelimit = (api.api_limit, decision)
    if not decision.allowed:
        raise ApiError(
            429,
            f"more than {api.api_limit.count} requests a minute",
            headers={"Retry-After": str(decision.retry_after)},
        )
    return caller


def rate_limit_headers(limit: Limit, decision: Decision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(limit.count),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_after),
        "RateLimit-Policy": f"{limit.count};w={int(limit.window_seconds)}",
    }


CallerDep = Annotated[Caller, Depends(authenticate)]


def scoped(scope: str) -> Callable[[Caller], Caller]:
    def check(caller: CallerDep) -> Caller:
        caller.require(scope)
        return caller

    return check


def reader_session(request: Request) -> Iterator[Session]:
    """A session for reading (nothing is committed)."""
    with api_of(request).sessions() as session:
        yield session


ReadSession = Annotated[Session, Depends(reader_session)]


# --- pages -----------------------------------------------------------------------------


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        value = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
        kind, _, number = value.partition(":")
        if kind != "after" or not number.isdigit() or len(number) > 18:
            raise ValueError(value)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(422, "cursor is not one this API gave", field="cursor") from exc


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def page(
    request: Request, items: Sequence[BaseModel], last_id: int | None, limit: int
) -> JSONResponse:
    """A page with `next_cursor` and a Link header when a full page was returned."""
    next_cursor = encode_cursor(last_id) if last_id is not None and len(items) >= limit else None
    headers: dict[str, str] = {}
    if next_cursor:
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        query["cursor"] = next_cursor
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    body = {"items": [jsonable_encoder(i) for i in items], "next_cursor": next_cursor}
    return JSONResponse(body, headers=headers)


# --- writes ----------------------------------------------------------------------------

Work = Callable[[Session], tuple[int, BaseModel, str]]


def write(request: Request, caller: Caller, body: BaseModel | None, work: Work) -> Response:
    """Run `work` (which returns status, response model and Location) in one
    transaction audited as the caller's; a POST with an Idempotency-Key runs it once
    per key (accounts/idempotency.py) and replays the first response after that."""
    api = api_of(request)
    key = request.headers.get("idempotency-key") if request.method == "POST" else None
    claim_id = 0
    if key is not None:
        if not 1 <= len(key) <= idempotency.MAX_KEY or not key.isprintable():
            raise ApiError(
                422,
                "Idempotency-Key must be 1 to 255 printable characters",
                field="Idempotency-Key",
            )
        print_ = idempotency.fingerprint(
            request.method,
            f"{request.url.path}?{request.url.query}",
            json.dumps(jsonable_encoder(body), sort_keys=True).encode() if body else b"",
        )
        claim = idempotency.claim(api.sessions, caller.owner, key, print_)
        if claim.outcome is idempotency.Outcome.replay:
            headers = {"Idempotent-Replayed": "true"}
            if claim.location:
                headers["Location"] = claim.location
            return Response(
                claim.response, claim.status_code, headers=headers, media_type=claim.content_type
            )
        if claim.outcome is idempotency.Outcome.mismatch:
            raise ApiError(
                422, "this Idempotency-Key was used for another request", field="Idempotency-Key"
            )
        if claim.outcome is idempotency.Outcome.in_progress:
            raise ApiError(
                409,
                "a request with this Idempotency-Key is still running; retry",
                headers={"Retry-After": "1"},
            )
        claim_id = claim.record_id
    try:
        with api.sessions() as session:
            act_as(session, caller.actor)
            status, model, location = work(session)
            content = json.dumps(jsonable_encoder(model))
            if claim_id:
                idempotency.complete(
                    session, claim_id, status, content, "application/json", location
                )
            session.commit()
    except BaseException:
        if claim_id:
            idempotency.release(api.sessions, claim_id)
        raise
    return Response(
        content,
        status,
        headers={"Location": location} if location else None,
        media_type="application/json",
    )


def audited(request: Request, caller: Caller, read: Callable[[Session], T]) -> T:
    """Run `read` in a transaction audited as the caller's and commit: for reads that
    are logged (exports of personal data)."""
    with api_of(request).sessions() as session:
        act_as(session, caller.actor)
        result = read(session)
        session.commit()
    return result


def check_if_match(request: Request, current: str) -> None:
    """412 unless If-Match names the current version; 428 without If-Match."""
    given = request.headers.get("if-match")
    if given is None:
        raise ApiError(
            428, "send If-Match with the ETag you read, so no edit is lost", field="If-Match"
        )
    tags = {tag.strip().removeprefix("W/") for tag in given.split(",")}
    if "*" not in tags and f'"{current}"' not in tags:
        raise ApiError(412, "changed since you read it: read it again and retry", field="If-Match")


def json_response(model: BaseModel, status: int = 200, etag: str | None = None) -> JSONResponse:
    headers = {"ETag": f'"{etag}"'} if etag else None
    return JSONResponse(jsonable_encoder(model), status_code=status, headers=headers)


def errors_of(detail: Any) -> list[dict[str, str]]:
    """FastAPI's validation errors as {field, message}, the field as a dotted path."""
    found = []
    for error in detail:
        if error.get("type") == "json_invalid":
            # Its "location" is a character offset, not a field: say so.
            offset = next((p for p in error.get("loc", ())[1:] if isinstance(p, int)), 0)
            reason = (error.get("ctx") or {}).get("error", "")
            message = f"not valid JSON at character {offset}: {reason}".rstrip(": ")
            found.append({"field": "body", "message": message})
            continue
        where = [str(part) for part in error.get("loc", ()) if part != "body"]
        found.append({"field": ".".join(where) or "body", "message": str(error.get("msg", ""))})
    return found

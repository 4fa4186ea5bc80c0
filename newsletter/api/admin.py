"""Users, tokens and the audit log (admins; anyone may manage their own tokens)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from newsletter.accounts import audit, tokens, users
from newsletter.accounts.models import ApiToken
from newsletter.api.common import (
    ApiError,
    Caller,
    CallerDep,
    Id,
    ReadSession,
    decode_cursor,
    page,
    scoped,
    write,
)
from newsletter.api.schemas import (
    AuditOut,
    Page,
    PasswordIn,
    TokenCreated,
    TokenIn,
    TokenOut,
    TotpConfirmIn,
    TotpOut,
    UserIn,
    UserOut,
    UserPatch,
)
from newsletter.audience.lists import get_list

router = APIRouter()
Admin = Annotated[Caller, Depends(scoped("users:write"))]
AdminReader = Annotated[Caller, Depends(scoped("users:read"))]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/users", response_model=Page[UserOut], tags=["users"])
def list_users(caller: AdminReader, session: ReadSession) -> list[UserOut]:
    items = [UserOut(**users.describe_user(u)) for u in users.list_users(session)]
    return Page[UserOut](items=items)  # type: ignore[return-value]


def _list_ids(session: Session, slugs: list[str] | None) -> list[int] | None:
    return None if slugs is None else [get_list(session, slug).id for slug in slugs]


@router.post("/users", status_code=201, response_model=UserOut, tags=["users"])
def create_user(body: UserIn, caller: Admin, request: Request) -> Response:
    def work(session: Session) -> tuple[int, UserOut, str]:
        user = users.create_user(
            session,
            body.email,
            body.role,
            name=body.name,
            password=body.password,
            list_ids=_list_ids(session, body.lists),
        )
        return 201, UserOut(**users.describe_user(user)), f"/api/v1/users/{user.id}"

    return write(request, caller, body, work)


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
def get_user(user_id: Id, caller: AdminReader, session: ReadSession) -> UserOut:
    return UserOut(**users.describe_user(users.get_user_by_id(session, user_id)))


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"])
def update_user(user_id: Id, body: UserPatch, caller: Admin, request: Request) -> Response:
    """Change role, name, list scope; `disabled: true` stops the user at once."""

    def work(session: Session) -> tuple[int, UserOut, str]:
        user = users.get_user_by_id(session, user_id)
        list_ids: list[int] | bool | None = False
        if body.all_lists:
            list_ids = None
        elif body.lists is not None:
            list_ids = _list_ids(session, body.lists)
        users.update_user(
            session,
            user,
            role=body.role,
            name=body.name,
            disabled=body.disabled,
            list_ids=list_ids,
        )
        return 200, UserOut(**users.describe_user(user)), ""

    return write(request, caller, body, work)


@router.post("/users/{user_id}/password", response_model=UserOut, tags=["users"])
def set_password(user_id: Id, body: PasswordIn, caller: Admin, request: Request) -> Response:
    """A new password; the user's sessions end."""

    def work(session: Session) -> tuple[int, UserOut, str]:
        user = users.get_user_by_id(session, user_id)
        users.set_password(session, user, body.password)
        return 200, UserOut(**users.describe_user(user)), ""

    return write(request, caller, body, work)


@router.post("/users/{user_id}/totp", response_model=TotpOut, tags=["users"])
def start_totp(user_id: Id, caller: Admin, request: Request) -> Response:
    """Set up a TOTP second factor (replacing one set up before): the URI and secret
    for the app. Login is unchanged until `POST …/totp/confirm` takes a code from it."""

    def work(session: Session) -> tuple[int, TotpOut, str]:
        user = users.get_user_by_id(session, user_id)
        setup = users.start_totp(session, user)
        out = TotpOut(
            provisioning_uri=setup.uri,
            secret=setup.secret,
            user=UserOut(**users.describe_user(user)),
        )
        return 200, out, ""

    return write(request, caller, None, work)


@router.post("/users/{user_id}/totp/confirm", response_model=UserOut, tags=["users"])
def confirm_totp(user_id: Id, body: TotpConfirmIn, caller: Admin, request: Request) -> Response:
    """Switch on the second factor being set up, with a code its app shows now; the
    user's sessions end. A wrong code is 422 on `code` and changes nothing."""

    def work(session: Session) -> tuple[int, UserOut, str]:
        user = users.get_user_by_id(session, user_id)
        users.confirm_totp(session, user, body.code)
        return 200, UserOut(**users.describe_user(user)), ""

    return write(request, caller, body, work)


@router.delete("/users/{user_id}/totp", response_model=UserOut, tags=["users"])
def remove_totp(user_id: Id, caller: Admin, request: Request) -> Response:
    """Remove the user's second factor (and one being set up): logging in needs the
    password only, for someone who lost their authenticator."""

    def work(session: Session) -> tuple[int, UserOut, str]:
        user = users.get_user_by_id(session, user_id)
        users.remove_totp(session, user)
        return 200, UserOut(**users.describe_user(user)), ""

    return write(request, caller, None, work)


def _visible(caller: Caller, token: ApiToken) -> bool:
    return "users:read" in caller.scopes or token.user_id == caller.user_id


@router.get("/tokens", response_model=Page[TokenOut], tags=["tokens"])
def list_tokens(caller: CallerDep, session: ReadSession) -> JSONResponse:
    """Your tokens; an admin sees everyone's."""
    owner = None if "users:read" in caller.scopes else users.get_user_by_id(session, caller.user_id)
    items = [TokenOut(**tokens.describe_token(t)) for t in tokens.list_tokens(session, owner)]
    return JSONResponse(Page[TokenOut](items=items).model_dump(mode="json"))


@router.post("/tokens", status_code=201, response_model=TokenCreated, tags=["tokens"])
def create_token(body: TokenIn, caller: CallerDep, request: Request) -> Response:
    """A token for you (or, for an admin, for anyone) with scopes within the owner's
    role, and never beyond your own. The secret is in this response only."""
    if body.user is not None and "users:write" not in caller.scopes:
        raise ApiError(403, "only an admin makes tokens for others", field="user")
    if caller.via == "token" and not set(body.scopes) <= caller.scopes:
        raise ApiError(
            403, "a token cannot make a token with more scopes than its own", field="scopes"
        )

    def work(session: Session) -> tuple[int, TokenCreated, str]:
        owner = (
            users.get_user(session, body.user)
            if body.user
            else users.get_user_by_id(session, caller.user_id)
        )
        lifetime = tokens.parse_lifetime(body.expires) if body.expires else None
        made = tokens.create_token(session, owner, body.scopes, name=body.name, lifetime=lifetime)
        out = TokenCreated(**tokens.describe_token(made.row), token=made.token)
        return 201, out, f"/api/v1/tokens/{made.row.id}"

    return write(request, caller, body, work)


@router.delete("/tokens/{token_id}", response_model=TokenOut, tags=["tokens"])
def revoke_token(token_id: Id, caller: CallerDep, request: Request) -> Response:
    """Revoke a token at once (yours; an admin: anyone's)."""

    def work(session: Session) -> tuple[int, TokenOut, str]:
        row = tokens.get_token(session, token_id)
        if not _visible(caller, row) or (
            row.user_id != caller.user_id and "users:write" not in caller.scopes
        ):
            raise ApiError(404, f"no token {token_id}")
        tokens.revoke_token(session, row)
        return 200, TokenOut(**tokens.describe_token(row)), ""

    return write(request, caller, None, work)


@router.get("/audit", response_model=Page[AuditOut], tags=["audit"])
def list_audit(
    request: Request,
    caller: AdminReader,
    session: ReadSession,
    since: datetime | None = None,
    user: Annotated[str | None, Query(max_length=320)] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 50,
) -> JSONResponse:
    """The audit log, oldest first (`since` an ISO time; `user` an email)."""
    if since is not None and since.tzinfo is None:
        raise ApiError(422, "since needs a time zone offset, e.g. 2026-12-01T09:00Z", field="since")
    rows = audit.entries(
        session, since=since, user=user, after_id=decode_cursor(cursor), limit=limit
    )
    items = [AuditOut(**audit.describe_entry(e)) for e in rows]
    return page(request, items, rows[-1].id if rows else None, limit)

"""Logging in and out with a session cookie, and who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from newsletter.accounts import sessions as staff_sessions
from newsletter.accounts.audit import Actor, act_as
from newsletter.accounts.users import describe_user
from newsletter.api.common import (
    SESSION_COOKIE,
    ApiError,
    CallerDep,
    api_of,
    client_ip,
)
from newsletter.api.schemas import LoginIn, LoginOut, MeOut, UserOut

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=LoginOut)
def login(body: LoginIn, request: Request) -> JSONResponse:
    """Open a session: a `Secure; HttpOnly; SameSite=Lax` cookie, and the CSRF token
    that unsafe requests made with it must carry in X-CSRF-Token. Wrong address, wrong
    password and disabled account get the same answer; attempts are limited per
    account and per client address."""
    api = api_of(request)
    cfg = api.settings
    ip = client_ip(request)
    retry_after = staff_sessions.login_retry_after(api.limiter, cfg, ip, body.email)
    if retry_after:
        raise ApiError(
            429,
            "too many login attempts; wait and retry",
            headers={"Retry-After": str(retry_after)},
        )
    with api.sessions() as session:
        act_as(session, Actor("anonymous", "session", None, ip))
        try:
            done = staff_sessions.log_in(
                session,
                body.email,
                body.password,
                body.totp_code,
                ip=ip,
                user_agent=request.headers.get("user-agent", ""),
                lifetime=timedelta(hours=cfg.session_hours),
            )
        except staff_sessions.LoginFailed as exc:
            raise ApiError(401, str(exc)) from exc
        except staff_sessions.SecondFactorRequired as exc:
            raise ApiError(401, str(exc), field="totp_code") from exc
        out = LoginOut(
            user=UserOut(**describe_user(done.user)),
            csrf_token=staff_sessions.csrf_token(cfg.secret_key, done.cookie),
            expires_at=done.expires_at,
        )
        session.commit()
    response = JSONResponse(out.model_dump(mode="json"))
    response.set_cookie(
        SESSION_COOKIE,
        done.cookie,
        max_age=int(cfg.session_hours * 3600),
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/auth/logout", status_code=204, response_class=Response)
def logout(caller: CallerDep, request: Request) -> Response:
    """End this session (with a token: nothing to end)."""
    api = api_of(request)
    if caller.cookie:
        with api.sessions() as session:
            act_as(session, caller.actor)
            staff_sessions.log_out(session, caller.cookie)
            session.commit()
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


@router.get("/auth/me", response_model=MeOut)
def me(caller: CallerDep, request: Request) -> MeOut:
    """Who is calling, how, and with which scopes."""
    from newsletter.accounts.users import get_user_by_id

    with api_of(request).sessions() as session:
        user = UserOut(**describe_user(get_user_by_id(session, caller.user_id)))
    return MeOut(user=user, via=caller.via, scopes=sorted(caller.scopes))

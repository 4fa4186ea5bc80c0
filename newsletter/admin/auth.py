"""Logging in and out, the colour theme, and one's own account: a new password and a
second factor (TOTP: set up with a QR code drawn by segno as SVG, switched on by a
first code from the app, switched off with one's password or a code)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter.accounts import sessions as staff_sessions
from newsletter.accounts import totp, users
from newsletter.accounts.audit import Actor, act_as
from newsletter.accounts.passwords import verify_password
from newsletter.admin.common import (
    LOGIN_COOKIE,
    PREFIX,
    THEME_COOKIE,
    THEMES,
    ReadSession,
    Viewer,
    ViewerDep,
    client_ip,
    console_of,
    login_token,
    new_login_cookie,
    redirect,
    render,
    safe_next,
    write,
)
from newsletter.admin.i18n import _
from newsletter.errors import InvalidInputError

router = APIRouter()
Text = Annotated[str, Form(max_length=1024)]


def _login_page(
    request: Request, *, status: int = 200, error: str = "", email: str = "", next_path: str = ""
) -> Response:
    console = console_of(request)
    cookie = request.cookies.get(LOGIN_COOKIE) or new_login_cookie()
    response = render(
        request,
        "login.html",
        None,
        title=_("Log in"),
        status=status,
        error=error,
        email=email,
        next=safe_next(next_path),
        login_csrf=login_token(console.settings.secret_key, cookie),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=3600,
        path=PREFIX,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:
    return _login_page(request, next_path=next)


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Text,
    code: Annotated[str, Form(max_length=20)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Open a session (the staff API's cookie); attempts are limited per account and
    per client address, and every failure gets the same answer."""
    console = console_of(request)
    ip = client_ip(request)
    wait = staff_sessions.login_retry_after(console.limiter, console.settings, ip, email)
    if wait:
        message = _("Too many attempts: wait {seconds} seconds and try again.").format(seconds=wait)
        return _login_page(request, status=429, error=message, email=email, next_path=next)
    with console.sessions() as session:
        act_as(session, Actor("anonymous", "session", None, ip))
        try:
            done = staff_sessions.log_in(
                session,
                email,
                password,
                code.strip() or None,
                ip=ip,
                user_agent=request.headers.get("user-agent", ""),
                lifetime=timedelta(hours=console.settings.session_hours),
            )
        except (staff_sessions.LoginFailed, staff_sessions.SecondFactorRequired) as exc:
            return _login_page(request, status=401, error=str(exc), email=email, next_path=next)
        session.commit()
    response = redirect(safe_next(next))
    response.set_cookie(
        staff_sessions.COOKIE,
        done.cookie,
        max_age=int(console.settings.session_hours * 3600),
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX, secure=True, httponly=True)
    return response


@router.post("/logout")
def logout(request: Request, viewer: ViewerDep) -> Response:
    write(request, viewer, lambda session: staff_sessions.log_out(session, viewer.cookie))
    response = redirect(PREFIX + "/login", _("You are logged out."))
    response.delete_cookie(
        staff_sessions.COOKIE, path="/", secure=True, httponly=True, samesite="lax"
    )
    return response


@router.post("/theme")
def theme(
    request: Request,
    theme: Annotated[str, Form(max_length=10)],
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Light, dark or the system's: remembered in a cookie, so it needs no script."""
    response = redirect(safe_next(back))
    if theme in THEMES:
        response.set_cookie(
            THEME_COOKIE, theme, max_age=365 * 86400, path=PREFIX, secure=True, samesite="lax"
        )
    return response


@router.get("/account")
def account(request: Request, viewer: ViewerDep) -> Response:
    return render(request, "account.html", viewer, title=_("Your account"))


def _password_attempt_refused(request: Request, viewer: Viewer) -> Response | None:
    """A form of the account page that checks a password counts as a login attempt:
    the account page with a 429 once the login limits are spent, else None."""
    console = console_of(request)
    wait = staff_sessions.login_retry_after(
        console.limiter, console.settings, viewer.ip, viewer.email
    )
    if not wait:
        return None
    message = _("Too many attempts: wait {seconds} seconds and try again.")
    return render(
        request,
        "account.html",
        viewer,
        title=_("Your account"),
        status=429,
        error=message.format(seconds=wait),
    )


@router.post("/account/password")
def change_password(
    request: Request, viewer: ViewerDep, current: Text, new: Text, repeat: Text
) -> Response:
    """A new password for yourself; every session of yours ends, this one too. The
    attempts count against the login limits (the current password is checked)."""
    limited = _password_attempt_refused(request, viewer)
    if limited is not None:
        return limited

    def work(session: Session) -> str:
        user = users.get_user_by_id(session, viewer.user_id)
        if not verify_password(user.password_hash, current):
            return _("Your current password is not right.")
        if new != repeat:
            return _("The two new passwords differ.")
        try:
            users.set_password(session, user, new)
        except InvalidInputError as exc:
            return str(exc)
        return ""

    problem = write(request, viewer, work)
    if problem:
        return render(
            request, "account.html", viewer, title=_("Your account"), status=422, error=problem
        )
    response = redirect(PREFIX + "/login", _("Your password is changed: log in with the new one."))
    response.delete_cookie(staff_sessions.COOKIE, path="/", secure=True, httponly=True)
    return response


def _qr(setup: totp.Setup) -> str:
    return segno.make(setup.uri, error="m").svg_data_uri(
        scale=5, border=2, dark="#000", light="#fff"
    )


def _setup_page(
    request: Request, viewer: Viewer, setup: totp.Setup, *, status: int = 200, error: str = ""
) -> Response:
    return render(
        request,
        "totp.html",
        viewer,
        title=_("Set up an authenticator"),
        status=status,
        error=error,
        qr=_qr(setup),
        secret=setup.secret,
    )


@router.post("/account/totp")
def start_totp(request: Request, viewer: ViewerDep) -> Response:
    """Set up an authenticator: a pending secret (replacing one set up before), shown
    on the next page with a field for its first code. Login is unchanged until then."""
    write(
        request,
        viewer,
        lambda session: users.start_totp(session, users.get_user_by_id(session, viewer.user_id)),
    )
    return redirect(PREFIX + "/account/totp")


@router.get("/account/totp")
def pending_totp(request: Request, viewer: ViewerDep, session: ReadSession) -> Response:
    """The authenticator being set up: its QR code, its secret and the code field."""
    setup = users.pending_totp(users.get_user_by_id(session, viewer.user_id))
    if setup is None:
        return redirect(PREFIX + "/account")
    return _setup_page(request, viewer, setup)


@router.post("/account/totp/confirm")
def confirm_totp(
    request: Request, viewer: ViewerDep, code: Annotated[str, Form(max_length=20)]
) -> Response:
    """A right first code switches the second factor on and ends every session of
    yours; a wrong one leaves it off and shows the same QR code again."""
    try:
        write(
            request,
            viewer,
            lambda session: users.confirm_totp(
                session, users.get_user_by_id(session, viewer.user_id), code
            ),
        )
    except totp.WrongCode:
        with console_of(request).sessions() as session:
            setup = users.pending_totp(users.get_user_by_id(session, viewer.user_id))
        if setup is None:
            return redirect(PREFIX + "/account", _("Nothing is being set up: start again."))
        message = _(
            "That is not the code your app shows now: the second factor is still off. "
            "Type the next code, or check that the app has this secret."
        )
        return _setup_page(request, viewer, setup, status=422, error=message)
    response = redirect(
        PREFIX + "/login",
        _("Your second factor is on: log in again with your password and a code from the app."),
    )
    response.delete_cookie(staff_sessions.COOKIE, path="/", secure=True, httponly=True)
    return response


@router.post("/account/totp/off")
def remove_totp(request: Request, viewer: ViewerDep, proof: Text) -> Response:
    """Switch your second factor off, proved by your password or a current code; the
    attempts count against the login limits (a password is checked)."""
    limited = _password_attempt_refused(request, viewer)
    if limited is not None:
        return limited
    try:
        write(
            request,
            viewer,
            lambda session: users.remove_own_totp(
                session, users.get_user_by_id(session, viewer.user_id), proof
            ),
        )
    except totp.WrongCode:
        error = _("That is neither your password nor a current code: nothing changed.")
        return render(
            request, "account.html", viewer, title=_("Your account"), status=422, error=error
        )
    return redirect(
        PREFIX + "/account", _("Your second factor is off: logging in needs your password only.")
    )

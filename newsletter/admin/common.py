"""What every console page shares: who is looking (the session cookie of the staff
API), CSRF tokens, role checks, page rendering, and the unit of work of a write.

A viewer is a staff user with a live session. Every route names the scope it needs
(`viewer.require("campaigns:send")`); a missing one is a 403 page, never a traceback.
Every POST carries the session's CSRF token in a hidden `csrf` field (or the
X-CSRF-Token header): the token is an HMAC of the session's id under the secret key,
so it is bound to that session row, dies with it, and cannot be read or made by
another site. The login form, before any session exists, carries a token bound to a
short-lived cookie of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from newsletter.accounts.audit import Actor, act_as
from newsletter.accounts.roles import effective_scopes
from newsletter.accounts.sessions import COOKIE, csrf_token, session_user
from newsletter.admin.i18n import _
from newsletter.audience.lists import get_list
from newsletter.audience.models import MailingList
from newsletter.config import Settings
from newsletter.errors import NotFoundError
from newsletter.ratelimit import RateLimiter

T = TypeVar("T")
PREFIX = "/admin"
LOGIN_COOKIE = "nl_console_login"
THEME_COOKIE = "nl_console_theme"
THEMES = ("auto", "light", "dark")
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
HERE = Path(__file__).resolve().parent
# An email shown in a preview frame: its own inline styles and remote images, no
# script of any kind (a sandbox without allow-scripts), framed only by the console.
PREVIEW_CSP = "; ".join(
    (
        "default-src 'none'",
        "img-src https: http: data:",
        "style-src 'unsafe-inline'",
        "frame-ancestors 'self'",
        "sandbox",
    )
)


class LoginRequired(Exception):
    """No live session: the browser is sent to the login page, then back."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Forbidden(Exception):
    """The viewer's role does not allow this (a 403 page)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CsrfRejected(Exception):
    """A POST without the token of its session (a 403 page)."""


class Missing(Exception):
    """What was asked for does not exist: a 404 page that says so and links to the
    console page where it can be found or made (the domain's own NotFoundError may
    name a CLI command instead, which is no help in the console)."""

    def __init__(self, message: str, href: str, label: str) -> None:
        super().__init__(message)
        self.message = message
        self.href = href
        self.label = label


@dataclass(frozen=True)
class Assets:
    """Static files by their plain name and by the versioned name pages link to: a
    file's name carries the first characters of its SHA-256, so it can be cached for
    a year and a new release is fetched at once."""

    folder: Path
    by_name: Mapping[str, str]  # "console.css" -> "console.3fa2b1c0.css"
    by_versioned: Mapping[str, str]  # and back

    @classmethod
    def scan(cls, folder: Path) -> Assets:
        by_name: dict[str, str] = {}
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.suffix == ".md":
                continue
            if path.name.startswith("htmx-"):  # its version is in its name already
                by_name[path.name] = path.name
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
            by_name[path.name] = f"{path.stem}.{digest}{path.suffix}"
        return cls(folder, by_name, {v: k for k, v in by_name.items()})

    def url(self, name: str) -> str:
        return f"{PREFIX}/static/{self.by_name[name]}"


@dataclass(frozen=True)
class Console:
    """What the route handlers share, built once per app."""

    settings: Settings
    sessions: sessionmaker[Session]
    limiter: RateLimiter
    templates: jinja2.Environment
    assets: Assets


@dataclass(frozen=True)
class Viewer:
    """A logged-in member of staff, as this request sees them."""

    user_id: int
    email: str
    name: str
    role: str
    scopes: frozenset[str]
    list_ids: list[int] | None
    has_totp: bool
    totp_pending: bool  # an authenticator set up, waiting for its first code
    cookie: str
    csrf: str
    ip: str

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(
                _("Your role ({role}) does not allow this: it needs {scope}.").format(
                    role=self.role, scope=scope
                )
            )

    def require_lists(self, list_ids: list[int]) -> None:
        """403 unless a list-scoped user may work on every one of these lists."""
        if self.list_ids is not None and set(list_ids) - set(self.list_ids):
            raise Forbidden(_("You may not work on some of these lists."))

    @property
    def actor(self) -> Actor:
        return Actor(f"{self.email} (console)", "session", self.user_id, self.ip)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def login_token(secret_key: str, cookie: str) -> str:
    """The login form's CSRF token, bound to its own cookie (no session exists yet)."""
    return csrf_token(secret_key, "console-login:" + cookie)


def new_login_cookie() -> str:
    return secrets.token_urlsafe(24)


async def csrf_guard(request: Request) -> None:
    """Every POST must carry the CSRF token of its session (or of the login form)."""
    if request.method != "POST":
        return
    form = await request.form()
    given = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, ""))
    key = console_of(request).settings.secret_key
    expected = []
    if cookie := request.cookies.get(COOKIE):
        expected.append(csrf_token(key, cookie))
    if login := request.cookies.get(LOGIN_COOKIE):
        expected.append(login_token(key, login))
    if not given or not any(hmac.compare_digest(given, token) for token in expected):
        raise CsrfRejected()


def authenticate(request: Request) -> Viewer:
    """The viewer of this request; LoginRequired without a live session."""
    console = console_of(request)
    cookie = request.cookies.get(COOKIE, "")
    # After logging in, back to the page; a form's target is no page: home instead.
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = PREFIX + "/"
    if not cookie:
        raise LoginRequired(target)
    with console.sessions() as session:
        user = session_user(session, cookie)
        if user is None:
            raise LoginRequired(target)
        viewer = Viewer(
            user_id=user.id,
            email=user.email,
            name=user.name,
            role=user.role,
            scopes=effective_scopes(user.role),
            list_ids=user.list_ids,
            has_totp=user.totp_secret is not None,
            totp_pending=user.totp_pending_secret is not None,
            cookie=cookie,
            csrf=csrf_token(console.settings.secret_key, cookie),
            ip=client_ip(request),
        )
        session.commit()  # last-seen time, at most once a minute
    request.state.viewer = viewer  # for the error pages' navigation
    return viewer


ViewerDep = Annotated[Viewer, Depends(authenticate)]


def needs(scope: str) -> Callable[[Viewer], Viewer]:
    def check(viewer: ViewerDep) -> Viewer:
        viewer.require(scope)
        return viewer

    return check


def reader_session(request: Request) -> Iterator[Session]:
    """A session for reading (nothing is committed)."""
    with console_of(request).sessions() as session:
        yield session


ReadSession = Annotated[Session, Depends(reader_session)]


def write(request: Request, viewer: Viewer, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction audited as the viewer's, and commit it."""
    with console_of(request).sessions() as session:
        act_as(session, viewer.actor)
        result = work(session)
        session.commit()
    return result


def theme_of(request: Request) -> str:
    theme = request.cookies.get(THEME_COOKIE, "auto")
    return theme if theme in THEMES else "auto"


def render(
    request: Request,
    template: str,
    viewer: Viewer | None,
    *,
    title: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page (or, for htmx, the fragment a template renders on its own)."""
    console = console_of(request)
    html = console.templates.get_template(template).render(
        request=request,
        viewer=viewer,
        title=title,
        asset=console.assets.url,
        theme=theme_of(request),
        csrf=viewer.csrf if viewer else context.pop("login_csrf", ""),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


def redirect(path: str, notice: str = "") -> RedirectResponse:
    """303 See Other to a console page, with a one-line notice to show there."""
    if notice:
        path += ("&" if "?" in path else "?") + "notice=" + quote(notice)
    return RedirectResponse(path, status_code=303)


def safe_next(value: str | None) -> str:
    """A place in the console to go after logging in; never another site."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
        and "://" not in value
    ):
        return value
    return PREFIX + "/"


def list_named(session: Session, slug: str) -> MailingList:
    """The list with this slug, or a 404 page that leads to the Lists page."""
    try:
        return get_list(session, slug)
    except NotFoundError:
        raise Missing(
            _("There is no list “{slug}”.").format(slug=slug),
            PREFIX + "/lists",
            _("See the lists, or create one"),
        ) from None


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def not_found_page(request: Request, viewer: Viewer | None, message: str) -> Response:
    return render(request, "error.html", viewer, title=_("Not found"), status=404, message=message)

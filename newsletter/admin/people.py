"""Administration: users and roles, API tokens (a new token is shown once), the audit
log (by user, action and date), and the effective settings (secrets masked)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from newsletter.accounts import audit, tokens, users
from newsletter.accounts.roles import ROLE_SCOPES, Role
from newsletter.admin.common import (
    PREFIX,
    ReadSession,
    Viewer,
    ViewerDep,
    console_of,
    needs,
    redirect,
    render,
    write,
)
from newsletter.admin.i18n import _
from newsletter.config import effective_settings
from newsletter.errors import InvalidInputError

router = APIRouter()
AdminReader = Annotated[Viewer, Depends(needs("users:read"))]
Admin = Annotated[Viewer, Depends(needs("users:write"))]
PAGE = 100


# --- users ------------------------------------------------------------------------------


@router.get("/users")
def users_page(request: Request, viewer: AdminReader, session: ReadSession) -> Response:
    return render(
        request,
        "users.html",
        viewer,
        title=_("Users"),
        users=users.list_users(session),
        roles=[r.value for r in Role],
    )


@router.post("/users")
def create_user(
    request: Request,
    viewer: Admin,
    email: Annotated[str, Form(max_length=320)],
    role: Annotated[str, Form(max_length=20)],
    name: Annotated[str, Form(max_length=300)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    write(
        request,
        viewer,
        lambda session: users.create_user(
            session, email, role, name=name, password=password or None
        ),
    )
    return redirect(f"{PREFIX}/users", _("User {email} created.").format(email=email))


@router.post("/users/{user_id}")
def update_user(
    user_id: int,
    request: Request,
    viewer: Admin,
    role: Annotated[str, Form(max_length=20)] = "",
    disabled: Annotated[str, Form(pattern="^(|yes|no)$")] = "",
) -> Response:
    """Change a role, or disable (every session of theirs ends at once) or enable."""
    if user_id == viewer.user_id and (disabled == "yes" or (role and role != viewer.role)):
        raise InvalidInputError(_("You cannot disable yourself or change your own role."))

    def work(session: Session) -> None:
        user = users.get_user_by_id(session, user_id)
        users.update_user(
            session,
            user,
            role=role or None,
            disabled={"yes": True, "no": False}.get(disabled),
        )

    write(request, viewer, work)
    return redirect(f"{PREFIX}/users", _("Saved."))


@router.post("/users/{user_id}/totp/off")
def remove_totp(user_id: int, request: Request, viewer: Admin) -> Response:
    """Remove a colleague's second factor (a lost phone): they log in with their
    password and can set up a new one. Your own is switched off under your account,
    with your password or a code."""
    if user_id == viewer.user_id:
        raise InvalidInputError(
            _("Switch your own second factor off under your account (it asks for your password).")
        )

    def work(session: Session) -> tuple[str, bool]:
        user = users.get_user_by_id(session, user_id)
        return user.email, users.remove_totp(session, user)

    email, removed = write(request, viewer, work)
    notice = (
        _("The second factor of {email} is removed: they log in with their password.")
        if removed
        else _("{email} has no second factor.")
    )
    return redirect(f"{PREFIX}/users", notice.format(email=email))


# --- tokens -----------------------------------------------------------------------------


@router.get("/tokens")
def tokens_page(request: Request, viewer: ViewerDep, session: ReadSession) -> Response:
    """Your API tokens; an admin sees everyone's."""
    owner = None if viewer.may("users:read") else users.get_user_by_id(session, viewer.user_id)
    mine = sorted(ROLE_SCOPES[Role(viewer.role)])
    return render(
        request,
        "tokens.html",
        viewer,
        title=_("API tokens"),
        tokens=tokens.list_tokens(session, owner),
        scopes=mine,
        created=None,
    )


@router.post("/tokens")
async def create_token(request: Request, viewer: ViewerDep) -> Response:
    """A token for yourself with scopes within your role; its secret is on this page
    only, never again."""
    form = await request.form()
    chosen = [str(s) for s in form.getlist("scopes")]
    name = str(form.get("name") or "")[:200]
    expires = str(form.get("expires") or "").strip()

    def work(session: Session) -> tuple[str, str]:
        owner = users.get_user_by_id(session, viewer.user_id)
        lifetime = tokens.parse_lifetime(expires) if expires else None
        made = tokens.create_token(session, owner, chosen, name=name, lifetime=lifetime)
        return made.token, made.row.prefix

    from starlette.concurrency import run_in_threadpool

    secret, prefix = await run_in_threadpool(write, request, viewer, work)
    with console_of(request).sessions() as session:
        owner = None if viewer.may("users:read") else users.get_user_by_id(session, viewer.user_id)
        return render(
            request,
            "tokens.html",
            viewer,
            title=_("API tokens"),
            tokens=tokens.list_tokens(session, owner),
            scopes=sorted(ROLE_SCOPES[Role(viewer.role)]),
            created={"token": secret, "prefix": prefix},
        )


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: int, request: Request, viewer: ViewerDep) -> Response:
    def work(session: Session) -> None:
        row = tokens.get_token(session, token_id)
        if row.user_id != viewer.user_id:
            viewer.require("users:write")
        tokens.revoke_token(session, row)

    write(request, viewer, work)
    return redirect(f"{PREFIX}/tokens", _("Token revoked."))


# --- audit log --------------------------------------------------------------------------


def _day(value: str, what: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidInputError(f"{what}: {value!r} is not a day like 2026-12-07") from exc


@router.get("/audit")
def audit_log(
    request: Request,
    viewer: AdminReader,
    session: ReadSession,
    user: Annotated[str, Query(max_length=320)] = "",
    action: Annotated[str, Query(max_length=100)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    before: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Newest first, filtered by user (email), action (or family, e.g. "campaign")
    and days (until is inclusive)."""
    end = _day(until, "until")
    rows = audit.entries(
        session,
        user=user.strip() or None,
        action=action.strip() or None,
        since=_day(since, "since"),
        until=end + timedelta(days=1) if end else None,
        after_id=before,
        limit=PAGE,
        newest_first=True,
    )
    return render(
        request,
        "audit.html",
        viewer,
        title=_("Audit log"),
        rows=[audit.describe_entry(e) for e in rows],
        query={"user": user, "action": action, "since": since, "until": until},
        older=rows[-1].id if len(rows) == PAGE else 0,
    )


# --- settings ---------------------------------------------------------------------------


@router.get("/settings")
def settings_page(request: Request, viewer: AdminReader) -> Response:
    """What this process runs with (read once at start), secrets masked."""
    shown = effective_settings(console_of(request).settings)
    return render(request, "settings.html", viewer, title=_("Settings"), settings=shown)

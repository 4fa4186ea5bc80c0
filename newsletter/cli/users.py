"""`newsletter users …`, `tokens …` and `audit`: staff accounts, API tokens, the audit log."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from newsletter.cli.common import (
    JsonOption,
    console,
    err_console,
    open_session,
    print_json,
    settings,
)
from newsletter.errors import InvalidInputError

users = typer.Typer(help="Staff users: roles, passwords, second factor.", no_args_is_help=True)
tokens = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise InvalidInputError("no terminal to ask for a password: give --password-stdin")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users.command("create")
def users_create(
    email: str,
    role: Annotated[str, typer.Option(help="admin, editor, sender, analyst or ops.")],
    name: Annotated[str, typer.Option(help="Shown in the console and the audit log.")] = "",
    password_stdin: PasswordStdin = False,
    lists: Annotated[
        str | None, typer.Option(help="Editors and senders: only these lists (comma-separated).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user (the first admin of a fresh install too)."""
    from newsletter.accounts.users import create_user, describe_user
    from newsletter.audience.lists import get_list
    from newsletter.cli.common import split_values

    password = _read_password(password_stdin)
    with open_session(settings()) as session:
        list_ids = [get_list(session, s).id for s in split_values(lists)] if lists else None
        user = create_user(session, email, role, name=name, password=password, list_ids=list_ids)
        data = describe_user(user)
    if as_json:
        print_json(data)
    else:
        console.print(f"user {data['email']} created ({data['role']})")


@users.command("list")
def users_list(as_json: JsonOption = False) -> None:
    """Every user with role and state."""
    from newsletter.accounts.users import describe_user, list_users

    with open_session(settings()) as session:
        rows = [describe_user(u) for u in list_users(session)]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        state = "disabled" if r["disabled"] else ("totp" if r["totp"] else "")
        pending = "totp-pending" if r["totp_pending"] else ""
        console.print(f"{r['id']:>4}  {r['email']:<40} {r['role']:<8} {state} {pending}".rstrip())


def _set_disabled(email: str, disabled: bool) -> None:
    from newsletter.accounts.users import get_user, update_user

    with open_session(settings()) as session:
        update_user(session, get_user(session, email), disabled=disabled)
    console.print(f"user {email} is {'disabled; their sessions ended' if disabled else 'enabled'}")


@users.command("disable")
def users_disable(email: str) -> None:
    """Stop a user at once: sessions end, tokens stop working."""
    _set_disabled(email, True)


@users.command("enable")
def users_enable(email: str) -> None:
    """Let a disabled user in again (tokens that were not revoked work again)."""
    _set_disabled(email, False)


@users.command("set-role")
def users_set_role(email: str, role: str) -> None:
    """Give a user another role; their tokens keep only what the new role allows."""
    from newsletter.accounts.users import get_user, update_user

    with open_session(settings()) as session:
        update_user(session, get_user(session, email), role=role)
    console.print(f"user {email} is now {role}")


@users.command("reset-password")
def users_reset_password(email: str, password_stdin: PasswordStdin = False) -> None:
    """Set a new password; every session of the user ends."""
    from newsletter.accounts.users import get_user, set_password

    password = _read_password(password_stdin)
    with open_session(settings()) as session:
        set_password(session, get_user(session, email), password)
    console.print(f"password of {email} changed; their sessions ended")


@users.command("totp")
def users_totp(email: str) -> None:
    """Set up a TOTP second factor: prints the otpauth:// URI for an app. It is on
    only once `users totp-confirm` accepts a code from the app."""
    from newsletter.accounts.users import get_user, start_totp

    with open_session(settings()) as session:
        setup = start_totp(session, get_user(session, email))
    typer.echo(setup.uri)
    err_console.print(
        f"not on yet: add it to the app, then `newsletter users totp-confirm {email} CODE`"
        " with the code the app shows"
    )


@users.command("totp-confirm")
def users_totp_confirm(
    email: str, code: Annotated[str, typer.Argument(help="The 6 digits the app shows now.")]
) -> None:
    """Switch on the second factor being set up, proved by a current code; the
    user's sessions end and logging in needs a code from now on."""
    from newsletter.accounts.users import confirm_totp, get_user

    with open_session(settings()) as session:
        confirm_totp(session, get_user(session, email), code)
    console.print(f"second factor of {email} is on; their sessions ended")


@users.command("totp-off")
def users_totp_off(email: str) -> None:
    """Remove the second factor (and one being set up): logging in needs the
    password only. For a lost phone, or an admin locked out."""
    from newsletter.accounts.users import get_user, remove_totp

    with open_session(settings()) as session:
        removed = remove_totp(session, get_user(session, email))
    console.print(
        f"second factor of {email} removed" if removed else f"{email} has no second factor"
    )


@tokens.command("create")
def tokens_create(
    user: Annotated[str, typer.Option("--user", help="The owner (email).")],
    scope: Annotated[
        list[str], typer.Option("--scope", help="area:read or area:write (repeatable).")
    ],
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d, 12h, 2w.")] = None,
    name: Annotated[str, typer.Option(help="What it is for.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Make a token and print it once (it is stored hashed)."""
    from newsletter.accounts.tokens import create_token, describe_token, parse_lifetime
    from newsletter.accounts.users import get_user

    lifetime = parse_lifetime(expires) if expires else None
    with open_session(settings()) as session:
        made = create_token(
            session, get_user(session, user), list(scope), name=name, lifetime=lifetime
        )
        data = describe_token(made.row) | {"token": made.token}
    if as_json:
        print_json(data)
    else:
        typer.echo(made.token)
        console.print(f"token {data['prefix']}… for {data['user']}: shown once, keep it safe")


@tokens.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Tokens with prefix, owner, scopes and state (never the secret)."""
    from newsletter.accounts.tokens import describe_token, list_tokens
    from newsletter.accounts.users import get_user

    with open_session(settings()) as session:
        owner = get_user(session, user) if user else None
        rows = [describe_token(t) for t in list_tokens(session, owner)]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        state = "revoked" if r["revoked"] else f"expires {r['expires_at'] or 'never'}"
        console.print(
            f"{r['id']:>4}  {r['prefix']}…  {r['user']:<32} {state}  {' '.join(r['scopes'])}"
        )


@tokens.command("revoke")
def tokens_revoke(token: Annotated[str, typer.Argument(help="Its id or prefix (nl_…).")]) -> None:
    """Stop a token at once."""
    from newsletter.accounts.tokens import find_token, revoke_token

    with open_session(settings()) as session:
        row = revoke_token(session, find_token(session, token))
        prefix = row.prefix
    console.print(f"token {prefix}… revoked")


def audit(
    since: Annotated[
        str | None, typer.Option(help="From this ISO time (UTC unless it has an offset).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's (email).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """The audit log: every staff write, who, from where, what, before and after."""
    from newsletter.accounts.audit import describe_entry, entries
    from newsletter.campaigns.service import parse_local_time

    start = parse_local_time(since, "UTC") if since else None
    with open_session(settings()) as session:
        rows = [
            describe_entry(e)
            for e in entries(session, since=start, user=user, limit=max(1, min(limit, 100_000)))
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['at']}  {r['actor']:<40} {r['action']:<26} {r['target']}")

"""`newsletter users`, `tokens` and `audit` as a user runs them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyotp
import pytest

from tests.factories import wrong_totp_code
from tests.test_cli import NEWSLETTER, Cli, assert_clean_error

pytestmark = pytest.mark.slow
PASSWORD = "a long passphrase here"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    cli.ok("db", "upgrade")
    return cli


def typed(cli: Cli, *args: str, input: str) -> subprocess.CompletedProcess[str]:
    """The command with `input` on its stdin (a password)."""
    return subprocess.run(
        [str(NEWSLETTER), *args],
        cwd=cli.folder,
        env=cli.env,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_first_admin_then_a_token_shown_once_then_the_audit_log(cli: Cli) -> None:
    created = typed(
        cli, "users", "create", "Admin@Clinic.example", "--role", "admin", "--password-stdin",
        input=PASSWORD,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = cli.json(
        "tokens", "create", "--user", "admin@clinic.example", "--scope", "campaigns:read",
        "--expires", "90d",
    )  # fmt: skip
    assert token["token"].startswith(token["prefix"]) and token["token"].startswith("nl_")
    [listed] = cli.json("tokens", "list")
    assert "token" not in listed and listed["scopes"] == ["campaigns:read"]
    cli.ok("tokens", "revoke", str(listed["id"]))
    assert cli.json("tokens", "list")[0]["revoked"] is True
    actions = [entry["action"] for entry in cli.json("audit")]
    assert actions == ["user.create", "token.create", "token.revoke"]
    assert cli.json("audit", "--user", "admin@clinic.example") == []  # the CLI acted, not them


def test_bad_accounts_input_is_one_error_line(cli: Cli) -> None:
    assert_clean_error(
        typed(cli, "users", "create", "a@clinic.example", "--role", "boss", "--password-stdin",
              input=PASSWORD),
        "role 'boss' is not one of",
    )  # fmt: skip
    assert_clean_error(
        typed(cli, "users", "create", "a@clinic.example", "--role", "ops", "--password-stdin",
              input="short"),
        "at least 12 characters",
    )  # fmt: skip
    typed(cli, "users", "create", "a@clinic.example", "--role", "analyst", "--password-stdin",
          input=PASSWORD)  # fmt: skip
    assert_clean_error(
        cli.run("tokens", "create", "--user", "a@clinic.example", "--scope", "campaigns:write"),
        "more than the analyst role allows",
    )
    no_terminal = typed(cli, "users", "create", "x@y.org", "--role", "admin", input="")
    assert_clean_error(no_terminal, "--password-stdin")


def test_totp_is_set_up_then_confirmed_by_a_code_and_removed_for_the_locked_out(
    cli: Cli,
) -> None:
    typed(cli, "users", "create", "ann@clinic.example", "--role", "admin", "--password-stdin",
          input=PASSWORD)  # fmt: skip

    set_up = cli.ok("users", "totp", "ann@clinic.example")
    secret = pyotp.parse_uri(set_up.stdout.strip()).secret
    assert "totp-confirm" in set_up.stderr  # the next step, off stdout (which is the URI)
    assert _totp_state(cli) == (False, True)
    assert_clean_error(
        cli.run("users", "totp-confirm", "ann@clinic.example", wrong_totp_code(secret)),
        "code:", "not the current code",
    )  # fmt: skip
    assert _totp_state(cli) == (False, True)
    assert "totp-pending" in cli.ok("users", "list").stdout

    cli.ok("users", "totp-confirm", "ann@clinic.example", pyotp.TOTP(secret).now())
    assert _totp_state(cli) == (True, False)
    removed = cli.ok("users", "totp-off", "ann@clinic.example")
    again = cli.ok("users", "totp-off", "ann@clinic.example")

    assert "removed" in removed.stdout and "has no second factor" in again.stdout
    assert _totp_state(cli) == (False, False)
    entries = [e for e in cli.json("audit") if e["action"].startswith("user.totp")]
    assert [e["action"] for e in entries] == ["user.totp.setup", "user.totp.on", "user.totp.off"]
    assert {e["via"] for e in entries} == {"cli"}


def _totp_state(cli: Cli) -> tuple[bool, bool]:
    [user] = cli.json("users", "list")
    return user["totp"], user["totp_pending"]

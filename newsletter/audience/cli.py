"""Data-rights commands for `newsletter subscribers …`: export, export-data, forget.

Mounted by newsletter.cli; its helpers are imported inside each command, because
newsletter.cli imports this module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from newsletter.errors import InvalidInputError

app = typer.Typer(
    help="Subscribers' data: export a list, export or forget one person.", no_args_is_help=True
)


def _private_file(path: Path) -> int:
    """A new file only its owner can read (it holds personal data)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise InvalidInputError(f"--out {path}: {exc.strerror}") from exc


@app.command("export")
def subscribers_export(
    list_slug: Annotated[str, typer.Option("--list", help="The list to export.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write; - for stdout.")],
) -> None:
    """Every member of a list, whatever their status, with dates and attributes, as CSV."""
    from newsletter.audience.data_rights import export_list_csv
    from newsletter.cli import err_console, open_session, settings

    with open_session(settings()) as session:
        if str(out) == "-":
            count = export_list_csv(session, list_slug, sys.stdout)
        else:
            with open(_private_file(out), "w", encoding="utf-8", newline="") as file:
                count = export_list_csv(session, list_slug, file)
    # On stderr, so that `--out -` leaves only the CSV on stdout.
    err_console.print(f"{count} subscribers of {list_slug} exported to {out}")


@app.command("export-data")
def subscribers_export_data(email: str) -> None:
    """Everything we hold on one person, as JSON on stdout (a data access request)."""
    from newsletter.audience.data_rights import export_data
    from newsletter.cli import open_session, print_json, settings

    with open_session(settings()) as session:
        data = export_data(session, email)
    print_json(data)


@app.command("forget")
def subscribers_forget(
    email: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Erase one person's data; keep only a hash of the address so they are never mailed."""
    from newsletter.audience.data_rights import forget
    from newsletter.cli import console, open_session, print_json, settings

    if not yes:
        typer.confirm(f"Erase everything we hold on {email}? This cannot be undone", abort=True)
    with open_session(settings()) as session:
        report = forget(session, email)
    if as_json:
        print_json(report.as_json())
        return
    console.print(
        f"forgotten: subscriber {'deleted' if report.subscriber else 'not found'}, "
        f"{report.subscriptions} subscriptions, {report.enrollments} enrollments, "
        f"{report.deliveries} deliveries deleted, {report.bounce_events} bounce events "
        f"anonymised; suppression {report.suppression} (hash only)"
    )

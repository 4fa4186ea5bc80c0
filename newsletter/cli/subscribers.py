"""`newsletter subscribers …`: import a CSV; export a list; export or forget one person."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import (
    DRY_RUN_ROWS_SHOWN,
    JsonOption,
    console,
    err_console,
    open_session,
    print_json,
    report_problems,
    settings,
)
from newsletter.errors import InvalidInputError

app = typer.Typer(
    help="Subscribers: import, export a list, export or forget one person.",
    no_args_is_help=True,
)


@app.command("import")
def subscribers_import(
    file: Path,
    list_slug: Annotated[str, typer.Option("--list", help="The list to import them into.")],
    column_map: Annotated[
        str | None,
        typer.Option(
            "--map",
            help='Columns to fields, e.g. "Email Address=email,First Name=name,Plan=attr.plan,'
            'LEID=ignore" (fields: email, name, first_name, last_name, status, '
            "unsubscribed_at, cleaned_at, email_disabled, subscribed, attributes, ignore).",
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Status of every row when the file has no status column: subscribed, "
            "pending, unsubscribed or suppressed."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be imported; write nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Import a CSV: ours (email, name, any columns as attributes) or an export of
    Mailchimp, listmonk, Substack, Kit, Buttondown, Ghost or Sendy. Opted-out people
    are kept unsubscribed, bounced and blocklisted ones suppressed: never mailed."""
    from newsletter.audience.importer import import_subscribers_csv
    from newsletter.audience.layouts import parse_mapping, parse_status

    default_status = parse_status(status) if status is not None else None
    mapping = parse_mapping(column_map) if column_map else None
    with open_session(settings()) as session:
        report = import_subscribers_csv(
            session,
            file,
            list_slug,
            mapping=mapping,
            default_status=default_status,
            dry_run=dry_run,
        )
    if as_json:
        print_json(report.as_json())
        return
    shown = report.problems[:DRY_RUN_ROWS_SHOWN] if dry_run else report.problems
    report_problems(shown, report.warnings)
    if len(shown) < len(report.problems):
        err_console.print(f"… and {len(report.problems) - len(shown)} more rows skipped")
    done = "dry run, nothing written: " if dry_run else ""
    console.print(f"subscribers ({report.layout}): {done}{report.summary()}")


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
    from newsletter.services.data_rights import export_list_csv

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
    from newsletter.services.data_rights import export_data

    with open_session(settings()) as session:
        data = export_data(session, email)
    print_json(data)


@app.command("forget")
def subscribers_forget(
    email: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Erase one person's data; keep only a hash of the address so they are never mailed."""
    from newsletter.services.data_rights import forget

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

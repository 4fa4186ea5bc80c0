"""`newsletter bounces …`: read bounce mailboxes, try the classifier on a file;
`newsletter unsubscribes …`: read the mailbox of the List-Unsubscribe mailto: address.

Both read any mailbox the same way: bounces, complaints and unsubscribe requests
(a valid signed token in the subject or address) are each acted on once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter.bounces.dsn import BounceReport
from newsletter.bounces.mailbox import MailboxReport
from newsletter.cli.common import (
    JsonOption,
    console,
    open_session,
    print_json,
    report_problems,
    settings,
)

app = typer.Typer(
    help="Bounces and complaints: read the bounce mailbox, suppress bad addresses.",
    no_args_is_help=True,
)
unsubscribes = typer.Typer(
    help="Unsubscribe requests mailed to NEWSLETTER_LIST_UNSUBSCRIBE_MAILTO.",
    no_args_is_help=True,
)
MailboxPath = Annotated[Path, typer.Argument(help="A Maildir, an mbox file, .eml files' folder.")]


@app.command("import")
def import_command(path: MailboxPath, as_json: JsonOption = False) -> None:
    """Act on every bounce and unsubscribe request in a mailbox; again changes nothing."""
    from newsletter.audience.tokens import TokenSigner
    from newsletter.bounces.mailbox import import_mailbox

    cfg = settings()
    with open_session(cfg) as session:
        report = import_mailbox(session, path, cfg.soft_bounce_limit, TokenSigner(cfg.secret_key))
    _print_report(report, as_json)


@unsubscribes.command("import")
def unsubscribes_import(path: MailboxPath, as_json: JsonOption = False) -> None:
    """Unsubscribe the readers who mailed the unsubscribe address (a Maildir, mbox…)."""
    import_command(path, as_json)


@app.command("fetch")
def fetch_command(
    host: Annotated[str, typer.Option(help="IMAP server.")],
    user: Annotated[str, typer.Option(help="IMAP user name.")],
    password: Annotated[
        str,
        typer.Option(
            envvar="NEWSLETTER_IMAP_PASSWORD", prompt=True, hide_input=True, help="IMAP password."
        ),
    ],
    folder: Annotated[str, typer.Option(help="The bounce folder.")] = "INBOX",
    ssl: Annotated[bool, typer.Option("--ssl/--no-ssl", help="IMAP over TLS (993).")] = True,
    port: Annotated[int | None, typer.Option(help="Default 993, or 143 with --no-ssl.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Act on the folder's unseen messages over IMAP and mark them seen."""
    from newsletter.audience.tokens import TokenSigner
    from newsletter.bounces.mailbox import fetch_imap

    cfg = settings()
    with open_session(cfg) as session:
        report = fetch_imap(
            session,
            host,
            user,
            password,
            folder,
            ssl,
            port,
            cfg.soft_bounce_limit,
            signer=TokenSigner(cfg.secret_key),
        )
    _print_report(report, as_json)


# The same IMAP reading for the unsubscribe address's own mailbox.
unsubscribes.command(
    "fetch",
    help="Unsubscribe the readers who mailed the unsubscribe "
    "address: the folder's unseen messages over IMAP.",
)(fetch_command)


@app.command("classify")
def classify_command(
    files: Annotated[list[Path], typer.Argument(help="Email files (.eml).")],
    as_json: JsonOption = False,
) -> None:
    """Say what each email is (hard, soft, complaint…) without changing anything."""
    from newsletter.bounces.dsn import classify

    reports = [(file, classify(file.read_bytes())) for file in files]
    if as_json:
        print_json([_report_json(file, report) for file, report in reports])
        return
    for file, report in reports:
        named = ", ".join(f"{r.address} {r.kind} {r.status}".strip() for r in report.recipients)
        console.print(f"{file}: {report.kind}" + (f": {named}" if named else ""))


def _report_json(file: Path, report: BounceReport) -> dict[str, object]:
    return {
        "file": str(file),
        "kind": str(report.kind),
        "event_id": report.event_id,
        "feedback_type": report.feedback_type,
        "recipients": [
            {
                "address": r.address,
                "kind": str(r.kind),
                "status": r.status,
                "diagnostic": r.diagnostic,
            }
            for r in report.recipients
        ],
    }


def _print_report(report: MailboxReport, as_json: bool) -> None:

    if as_json:
        print_json(report.as_dict())
        return
    report_problems(report.problems)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.kinds.items())) or "none"
    actions = ", ".join(f"{n} {a}" for a, n in sorted(report.actions.items())) or "nothing"
    console.print(f"mailbox: {report.messages} messages ({kinds}); {actions}")

"""The `newsletter` command: the staff and ops face of the service.

One module per command group, each a plain Typer app mounted here; the commands
call the same service functions as the web faces, and print.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer
from sqlalchemy.exc import OperationalError, ProgrammingError

from newsletter.cli import (
    articles,
    bounces,
    campaigns,
    db,
    feeds,
    lists,
    ops,
    processes,
    segments,
    sequences,
    series,
    subscribers,
    templates,
    tools,
    users,
    webhooks,
)
from newsletter.cli.common import err_console
from newsletter.cli.hints import with_hint
from newsletter.errors import NewsletterError

app = typer.Typer(
    help="Self-hosted newsletters: articles in series, campaigns, Celery delivery.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db")
app.add_typer(articles.app, name="articles")
app.add_typer(series.app, name="series")
app.add_typer(feeds.app, name="feeds")
app.add_typer(lists.app, name="lists")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(segments.app, name="segments")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(campaigns.app, name="campaigns")
app.add_typer(templates.app, name="templates")
app.add_typer(sequences.app, name="sequences")
app.add_typer(bounces.app, name="bounces")
app.add_typer(users.users, name="users")
app.add_typer(users.tokens, name="tokens")
app.command("audit")(users.audit)
app.add_typer(bounces.unsubscribes, name="unsubscribes")
app.add_typer(processes.scheduler, name="scheduler")
app.command("schedule")(ops.schedule)
app.command("status")(ops.status)
app.add_typer(ops.deliveries_app, name="deliveries")
app.add_typer(ops.runs_app, name="runs")
app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    processes.worker
)
app.command("serve")(processes.serve)
app.command("bench")(tools.bench)
app.command("demo")(tools.demo)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: every NewsletterError becomes one line on stderr (with the command
    that fixes it, when there is one) and exit code 1.

    Click handles usage errors itself (a message and exit code 2).
    """
    try:
        app(args=list(argv) if argv is not None else None, prog_name="newsletter")
    except NewsletterError as exc:
        fail(with_hint(exc))
    except (OperationalError, ProgrammingError) as exc:
        fail(f"database: {' '.join(str(exc.orig).split())}")


def fail(message: str) -> None:
    err_console.print(f"error: {message}", style="red")
    sys.exit(1)

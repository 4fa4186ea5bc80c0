"""`newsletter bench` and `newsletter demo`."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import (
    JsonOption,
    console,
    err_console,
    print_json,
    settings,
)


def bench(
    subscribers: Annotated[int, typer.Option(help="Recipients of the benchmark digest.")] = 100_000,
    smtp: Annotated[
        str | None, typer.Option(help="SMTP URL to send to; default: start a local sink.")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Worker processes (Redis broker).")] = 2,
    tracking: Annotated[
        str, typer.Option(help="The bench list's tracking: off, anonymous or individual.")
    ] = "anonymous",
    track_opens: Annotated[
        bool, typer.Option("--track-opens/--no-track-opens", help="Add the open pixel.")
    ] = False,
    smtp_connections: Annotated[
        int | None,
        typer.Option(help="SMTP connections per worker process (NEWSLETTER_SMTP_CONNECTIONS)."),
    ] = None,
    latency_ms: Annotated[
        float,
        typer.Option(help="Round trip added in front of the sink by a delay proxy (ms)."),
    ] = 0.0,
    smtp_source_sessions: Annotated[
        int | None,
        typer.Option(help="Sessions of Postfix's smtp-source, the comparison (20; 50 far)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a digest to N generated subscribers through the configured database, broker
    and workers, and print end-to-end and per-stage figures."""
    from rich.progress import Progress
    from rich.table import Table

    from newsletter.bench import as_rows, result_json, run_bench
    from newsletter.bench.delay import CAVEAT
    from newsletter.config import parse_mail_url
    from newsletter.tracking.policy import parse_mode

    mode = parse_mode(tracking)
    cfg = settings()
    if smtp is not None:
        parse_mail_url(smtp)
    if latency_ms < 0 or (smtp_connections is not None and smtp_connections < 1):
        raise typer.BadParameter("--latency-ms must be 0 or more, --smtp-connections 1 or more")
    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("sending", total=subscribers)
        result = run_bench(
            cfg,
            subscribers,
            smtp,
            concurrency,
            lambda done, total: bar.update(task, completed=done),
            tracking=mode,
            track_opens=track_opens,
            smtp_connections=smtp_connections,
            latency_ms=latency_ms,
            smtp_source_sessions=smtp_source_sessions,
        )
    if as_json:
        print_json(result_json(result))
        return
    table = Table(title="newsletter bench", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in as_rows(result):
        table.add_row(label, value)
    console.print(table)
    if latency_ms:
        console.print(f"Caveat: {CAVEAT}")


def demo(
    subscribers: Annotated[int, typer.Option(help="Generated subscribers.")] = 1000,
    folder: Annotated[
        Path, typer.Option("--dir", help="Folder for the demo's database, outbox and preview.")
    ] = Path("newsletter-demo"),
) -> None:
    """Send the sample series to generated subscribers on the embedded default."""
    from newsletter.demo import run_demo

    run_demo(folder, subscribers, console, program=_this_program())


def _this_program() -> str:
    """How to run this tool again from here: `newsletter` when the PATH finds this very
    script, else the path it was started by (`make demo` runs `.venv/bin/newsletter`,
    which no PATH holds until the virtualenv is activated)."""
    started = Path(sys.argv[0])
    found = shutil.which("newsletter")
    if started.name != "newsletter" or (found and Path(found).resolve() == started.resolve()):
        return "newsletter"
    return shlex.quote(str(started))

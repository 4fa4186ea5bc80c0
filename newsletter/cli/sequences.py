"""`newsletter sequences …`: drip sequences, a series one article at a time."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.common import (
    JsonOption,
    console,
    open_session,
    print_json,
    settings,
)

app = typer.Typer(help="Drip sequences: a series, one article at a time.", no_args_is_help=True)


@app.command("create")
def sequences_create(
    series: Annotated[str, typer.Option(help="The series to send, article by article.")],
    list_slug: Annotated[str, typer.Option("--list", help="Its confirmed members are enrolled.")],
    every: Annotated[str | None, typer.Option(help="Period between articles, e.g. 7d.")] = None,
    cron: Annotated[
        str | None, typer.Option(help='Or a cron, e.g. "0 9 * * MON", in each reader\'s zone.')
    ] = None,
    tz: Annotated[str, typer.Option(help="Zone for readers without one of their own.")] = "UTC",
    delay: Annotated[str | None, typer.Option(help="Wait before article 1, e.g. 1d.")] = None,
    restart_on_rejoin: Annotated[
        bool, typer.Option("--restart-on-rejoin", help="Rejoining starts again at article 1.")
    ] = False,
    segment: Annotated[
        str | None, typer.Option(help="Enrol only the list's members matching this segment.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a drip sequence; the scheduler enrols the list's confirmed members."""
    from newsletter.sequences.service import create_sequence

    cfg = settings()
    with open_session(cfg) as session:
        sequence = create_sequence(
            session,
            postal_address=cfg.postal_address,
            series_slug=series,
            list_slug=list_slug,
            every=every,
            cron=cron,
            timezone=tz,
            initial_delay=delay,
            restart_on_rejoin=restart_on_rejoin,
            segment=segment,
        )
        sequence_id = sequence.id
    if as_json:
        print_json({"id": sequence_id})
    else:
        console.print(f"sequence {sequence_id} created")


@app.command("list")
def sequences_list(as_json: JsonOption = False) -> None:
    """Every sequence with its enrollments by status."""
    from newsletter.sequences.service import describe_sequence, list_sequences

    with open_session(settings()) as session:
        rows = [describe_sequence(session, s) for s in list_sequences(session)]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        period = f"every {r['every_seconds']}s" if r["every_seconds"] else f"cron {r['cron']}"
        console.print(f"{r['id']:>4}  {r['series']} → {r['list']}  {period}  {r['enrollments']}")


@app.command("show")
def sequences_show(sequence_id: int, as_json: JsonOption = False) -> None:
    """One sequence and its enrollments by status."""
    from newsletter.sequences.service import describe_sequence, get_sequence

    with open_session(settings()) as session:
        data = describe_sequence(session, get_sequence(session, sequence_id))
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        console.print(f"{key:>22}: {value}")


@app.command("report")
def sequences_report(sequence_id: int, as_json: JsonOption = False) -> None:
    """The funnel: per step, sent → opened → clicked (people only) → sent the next step."""
    from newsletter.services.reports import sequence_funnel

    with open_session(settings()) as session:
        data = sequence_funnel(session, sequence_id)
    if as_json:
        print_json(data)
        return
    for step in data["steps"]:
        following = "-" if step["next_step"] is None else str(step["next_step"])
        console.print(
            f"step {step['step']:>2} {step['article']}: sent {step['sent']}, "
            f"opened {step['opened']}, clicked {step['clicked']}, next step {following}"
        )

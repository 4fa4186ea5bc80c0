"""Ops commands: `newsletter status` and `newsletter schedule`."""

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


def schedule(
    days: Annotated[int, typer.Option(help="How far ahead to look.")] = 14,
    as_json: JsonOption = False,
) -> None:
    """Every upcoming send: campaign occurrences, and sequence steps due per day."""
    from newsletter.db import utcnow
    from newsletter.services.upcoming import upcoming

    with open_session(settings()) as session:
        items = upcoming(session, utcnow(), days)
    if as_json:
        print_json([item.as_json() for item in items])
        return
    if not items:
        console.print(f"nothing scheduled in the next {days} days")
    for item in items:
        what = f"{item.count} step(s) of" if item.kind == "sequence" else ""
        console.print(f"{item.when:<26} {item.kind:<9} {item.id:>4}  {what} {item.name}".rstrip())


def status(as_json: JsonOption = False) -> None:
    """Queues, workers and every active run: sent, deferred, failed, pending, rate, ETA."""
    from newsletter.tasks.app import configure, require_broker
    from newsletter.tasks.status import collect_status

    cfg = settings()
    require_broker(cfg)
    configure(cfg)
    with open_session(cfg) as session:
        report = collect_status(session, cfg)
    if as_json:
        print_json(report.as_json())
        return
    console.print(f"broker:  {report.broker}")
    for queue, depth in report.queues.items():
        console.print(f"queue {queue}: {'?' if depth is None else depth} waiting")
    if report.workers is not None:
        console.print(f"workers: {', '.join(report.workers) or 'none answering'}")
    if not report.runs:
        console.print("no active runs")
    for r in report.runs:
        eta = f"{r.eta_seconds:.0f}s" if r.eta_seconds is not None else "-"
        n = r.counts
        console.print(
            f"run {r.run} ({r.name}) [{r.status}]: {n['sent']}/{r.recipients} sent, "
            f"{n['deferred']} deferred, {n['failed']} failed, "
            f"{n['pending'] + n['sending']} pending, {r.rate_per_second}/s, ETA {eta}",
        )


def deliveries(
    campaign: Annotated[int | None, typer.Option(help="Runs of this campaign.")] = None,
    run: Annotated[int | None, typer.Option(help="This run.")] = None,
    email: Annotated[str | None, typer.Option(help="This recipient's address.")] = None,
    status: Annotated[str | None, typer.Option(help="sent, failed, deferred, …")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """The ledger: did Alice get it? Status, attempts and the server's last reply."""
    from newsletter.errors import InvalidInputError
    from newsletter.runs.models import DeliveryStatus
    from newsletter.runs.progress import find_deliveries

    if status is not None and status not in DeliveryStatus.__members__:
        raise InvalidInputError(f"--status must be one of {', '.join(DeliveryStatus)}")
    with open_session(settings()) as session:
        rows = find_deliveries(
            session,
            run_id=run,
            campaign_id=campaign,
            email=email,
            status=status,
            limit=max(1, min(limit, 100_000)),
        )
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"run {r['run']:>5}  {r['email']:<40} {r['status']:<10} "
            f"attempts {r['attempts']}  {r['smtp_reply']}"
        )

"""Ops commands: `newsletter status`, `schedule`, `deliveries list|retry`, `runs stalled`."""

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
    for relay in report.relays or []:
        resting = f", resting {relay.resting_seconds:.0f}s" if relay.resting_seconds else ""
        console.print(
            f"relay {relay.name}: {relay.rate}/s, {relay.open} connections open "
            f"({relay.allowed} allowed, {relay.processes} processes), {relay.sent} sent, "
            f"{relay.errors} errors ({relay.busy} busy, {relay.down} down){resting}",
        )


deliveries_app = typer.Typer(
    help="The ledger for ops: list deliveries, send failed ones again.",
    invoke_without_command=True,
)
runs_app = typer.Typer(help="Runs for ops.", no_args_is_help=True)

CampaignOption = Annotated[int | None, typer.Option("--campaign", help="Runs of this campaign.")]
RunOption = Annotated[int | None, typer.Option("--run", help="This run.")]
EmailOption = Annotated[str | None, typer.Option("--email", help="This recipient's address.")]
StatusOption = Annotated[
    str | None, typer.Option("--status", help="sent, failed, deferred, pending, …")
]
LimitOption = Annotated[int, typer.Option("--limit", help="At most this many.")]


@deliveries_app.callback()
def deliveries(
    ctx: typer.Context,
    campaign: CampaignOption = None,
    run: RunOption = None,
    email: EmailOption = None,
    status: StatusOption = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
) -> None:
    """The ledger: did Alice get it? Status, attempts and the server's last reply
    (`deliveries list`; the options also work here, without `list`)."""
    if ctx.invoked_subcommand is None:
        list_deliveries(campaign, run, email, status, limit, as_json)


@deliveries_app.command("list")
def list_deliveries(
    campaign: CampaignOption = None,
    run: RunOption = None,
    email: EmailOption = None,
    status: StatusOption = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
) -> None:
    """Deliveries by run, campaign, address or status, e.g. `--run 7 --status failed`."""
    from newsletter.services.deliveries import list_deliveries as find

    with open_session(settings()) as session:
        rows = find(
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
    if not rows:
        console.print("no deliveries match")
    for r in rows:
        console.print(
            f"run {r['run']:>5}  {r['email']:<40} {r['status']:<10} "
            f"attempts {r['attempts']}  {r['smtp_reply']}"
        )


@deliveries_app.command("retry")
def retry_deliveries(
    run: Annotated[int, typer.Option("--run", help="The run whose deliveries to send again.")],
    status: Annotated[
        str, typer.Option("--status", help="failed (default) or deferred (retry now).")
    ] = "failed",
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Send the run's failed (or deferred) deliveries once more, through the ledger:
    the next scheduler tick enqueues them. Sent deliveries are never touched;
    addresses suppressed since are left alone. Recorded in the audit log."""
    from newsletter.services.deliveries import retry_deliveries as retry

    with open_session(settings()) as session:
        report = retry(session, run, status, reason)
    if as_json:
        print_json(report.as_json())
        return
    console.print(f"{report.summary()}; the scheduler enqueues them at its next tick")


@runs_app.command("stalled")
def stalled_runs(as_json: JsonOption = False) -> None:
    """Runs that may send but have not moved (no progress for NEWSLETTER_STALL_SECONDS,
    or found stalled by the scheduler): check workers and the scheduler."""
    from newsletter.services.deliveries import stalled

    cfg = settings()
    with open_session(cfg) as session:
        found = stalled(session, cfg.stall_seconds)
    if as_json:
        print_json([one.as_json() for one in found])
        return
    if not found:
        console.print("no stalled runs")
    for one in found:
        what = f"campaign {one.campaign}" if one.campaign else f"sequence {one.sequence}"
        since = one.since.isoformat(timespec="seconds") if one.since else "its start"
        console.print(
            f"run {one.run} ({what}) [{one.status}]: no progress since {since}, {one.left} left"
        )

"""`newsletter campaigns …`: compose, preview, test, schedule, pause, cancel."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from newsletter.cli.common import (
    JsonOption,
    console,
    open_session,
    print_json,
    settings,
    split_values,
)

app = typer.Typer(help="Campaigns: compose, preview, test, schedule.", no_args_is_help=True)


SegmentOption = Annotated[
    str | None,
    typer.Option(help="Send only to the lists' members matching this segment (its slug)."),
]


@app.command("create")
def campaigns_create(
    name: Annotated[str, typer.Option(help="An internal name.")],
    list_slugs: Annotated[list[str], typer.Option("--list", help="List slug (repeatable).")],
    subject: Annotated[str, typer.Option(help="Subject; Jinja2, e.g. {{ slot('name') }}.")],
    articles: Annotated[str | None, typer.Option(help="Comma-separated article slugs.")] = None,
    latest: Annotated[int, typer.Option(help="The N most recent articles.")] = 0,
    series: Annotated[str | None, typer.Option(help="Every published article of a series.")] = None,
    since_last: Annotated[
        bool, typer.Option("--since-last", help="Articles published since the previous run.")
    ] = False,
    tag: Annotated[str | None, typer.Option(help="The most recent articles with this tag.")] = None,
    template: Annotated[str, typer.Option(help="digest or article.")] = "digest",
    preheader: str = "",
    tracking: Annotated[
        str | None,
        typer.Option(help="off or anonymous (more private than its lists); default: theirs."),
    ] = None,
    track_opens: Annotated[
        bool | None,
        typer.Option("--track-opens/--no-track-opens", help="The open pixel; default: lists'."),
    ] = None,
    segment: SegmentOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a draft campaign."""
    from newsletter.campaigns.service import ContentSpec, create_campaign

    content = ContentSpec(
        slugs=split_values(articles),
        latest=latest,
        series=series or "",
        since_last=since_last,
        tag=tag or "",
    )
    with open_session(settings()) as session:
        campaign = create_campaign(
            session,
            name=name,
            list_slugs=[s for value in list_slugs for s in split_values(value)],
            subject=subject,
            content=content,
            template=template,
            preheader=preheader,
            segment=segment,
        )
        if tracking is not None or track_opens is not None:
            from newsletter.campaigns.service import set_campaign_tracking

            set_campaign_tracking(session, campaign.id, tracking, track_opens)
        campaign_id = campaign.id
    if as_json:
        print_json({"id": campaign_id, "status": "draft"})
    else:
        console.print(f"campaign {campaign_id} created (draft)")


@app.command("update")
def campaigns_update(
    campaign_id: int,
    name: Annotated[str | None, typer.Option(help="A new internal name.")] = None,
    subject: Annotated[str | None, typer.Option(help="A new subject.")] = None,
    preheader: Annotated[str | None, typer.Option(help="A new preheader.")] = None,
    segment: Annotated[
        str | None,
        typer.Option(help='Send only to the lists\' members matching this segment ("" for all).'),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a draft campaign."""
    from newsletter.campaigns.service import describe_campaign, update_campaign

    with open_session(settings()) as session:
        campaign = update_campaign(
            session,
            campaign_id,
            name=name,
            subject=subject,
            preheader=preheader,
            segment=segment,
        )
        out = describe_campaign(session, campaign)
    if as_json:
        print_json(out)
    else:
        console.print(f"campaign {campaign_id} updated")


@app.command("schedule")
def campaigns_schedule(
    campaign_id: int,
    at: Annotated[str | None, typer.Option(help="ISO time, e.g. 2026-12-01T09:00.")] = None,
    tz: Annotated[str, typer.Option(help="Time zone of --at and --cron.")] = "UTC",
    now: Annotated[bool, typer.Option("--now", help="Send at the next scheduler tick.")] = False,
    cron: Annotated[
        str | None, typer.Option(help='Recurring, e.g. "0 9 * * MON" (read in --tz).')
    ] = None,
    skip_if_empty: Annotated[
        bool, typer.Option("--skip-if-empty", help="Recurring: skip a run with nothing new.")
    ] = False,
    local_time: Annotated[
        bool,
        typer.Option(
            "--local-time", help="Deliver at this wall-clock time in each subscriber's zone."
        ),
    ] = False,
) -> None:
    """Schedule a campaign once (--at TIME in --tz, or --now) or recurring (--cron)."""
    from newsletter.campaigns.service import ScheduleRequest, schedule

    cfg = settings()
    request = ScheduleRequest(
        at=at,
        timezone=tz,
        now=now,
        cron=cron,
        skip_if_empty=skip_if_empty,
        local_time=local_time,
        postal_address=cfg.postal_address,
    )
    with open_session(cfg) as session:
        said = schedule(session, campaign_id, request)
    console.print(said)


@app.command("show")
def campaigns_show(campaign_id: int, as_json: JsonOption = False) -> None:
    """A campaign, its content and the progress of its runs."""
    from newsletter.campaigns.content import get_campaign
    from newsletter.campaigns.service import describe_campaign

    with open_session(settings()) as session:
        data = describe_campaign(session, get_campaign(session, campaign_id))
    if as_json:
        print_json(data)
        return
    console.print(f"campaign {data['id']}: {data['name']} [{data['status']}]")
    console.print(f"  subject:  {data['subject']}")
    console.print(f"  lists:    {', '.join(data['lists'])}")
    console.print(f"  content:  {data['content']}")
    console.print(f"  articles: {', '.join(data['articles'])}")
    console.print(f"  send at:  {data['send_at'] or '-'} ({data['timezone']})")
    for run in data["runs"]:
        if run["error"]:
            console.print(f"  run {run['run']} [{run['status']}]: {run['error']}")
            continue
        console.print(
            f"  run {run['run']} [{run['status']}]: {run['recipients']} recipients, "
            f"{run['sent']} sent, {run['pending']} pending, {run['deferred']} deferred, "
            f"{run['failed']} failed, {run['suppressed']} suppressed",
        )


@app.command("list")
def campaigns_list(as_json: JsonOption = False) -> None:
    """Every campaign with its status."""
    from newsletter.campaigns.service import list_campaigns

    with open_session(settings()) as session:
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "status": c.status.value,
                "send_at": c.send_at.isoformat() if c.send_at else None,
            }
            for c in list_campaigns(session)
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['id']:>5}  {r['status']:<10} {r['send_at'] or '-':<26} {r['name']}",
        )


@app.command("preview")
def campaigns_preview(
    campaign_id: int,
    out: Annotated[Path, typer.Option(help="HTML file to write.")],
    subscriber: Annotated[
        str | None, typer.Option(help="As this subscriber (email) gets it; default: samples.")
    ] = None,
    text: Annotated[
        Path | None, typer.Option("--text", help="Also write the text part to this file.")
    ] = None,
) -> None:
    """Render the campaign as it would be sent now, for one subscriber or with samples."""
    from newsletter.delivery.previews import preview_for

    cfg = settings()
    with open_session(cfg) as session:
        preview = preview_for(session, campaign_id, cfg, subscriber)
    out.write_text(preview.html, encoding="utf-8")
    if text is not None:
        text.write_text(preview.text, encoding="utf-8")
    console.print(f"preview written to {out}")


@app.command("test")
def campaigns_test(
    campaign_id: int, to: Annotated[str, typer.Option(help="Address to send the test to.")]
) -> None:
    """Send one test copy (subject prefixed [Test]) through the configured mailer."""
    from newsletter.delivery.previews import send_test

    cfg = settings()
    with open_session(cfg) as session:
        reply = send_test(session, campaign_id, to, cfg)
    console.print(f"test sent to {to}: {reply}")


def _control(action: str, campaign_id: int) -> None:
    from newsletter.campaigns import control

    change = {
        "pause": control.pause_campaign,
        "resume": control.resume_campaign,
        "cancel": control.cancel_campaign,
    }[action]
    with open_session(settings()) as session:
        campaign = change(session, campaign_id)
        status = campaign.status.value
    console.print(f"campaign {campaign_id} is {status}")


@app.command("pause")
def campaigns_pause(campaign_id: int) -> None:
    """Stop sending within a second or two; `resume` continues where it stopped."""
    _control("pause", campaign_id)


@app.command("resume")
def campaigns_resume(campaign_id: int) -> None:
    """Continue a paused campaign (the scheduler re-enqueues what is left)."""
    _control("resume", campaign_id)


@app.command("cancel")
def campaigns_cancel(campaign_id: int) -> None:
    """Stop for good; what was sent stays recorded, the rest is marked cancelled."""
    _control("cancel", campaign_id)


@app.command("report")
def campaigns_report(
    campaign_id: int,
    run: Annotated[int | None, typer.Option(help="This run (default: the latest).")] = None,
    as_json: JsonOption = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Rows of section, item, measure, value.")
    ] = False,
    who_clicked: Annotated[
        bool,
        typer.Option("--who-clicked", help="CSV of the readers who clicked (individual mode)."),
    ] = False,
) -> None:
    """Results: delivered, bounced, unsubscribed; opens and clicks, human and machine."""
    from newsletter.services import reports

    with open_session(settings()) as session:
        data = reports.campaign_report(session, campaign_id, run)
        if who_clicked:
            if data["run"] is None:
                raise typer.Exit(0)
            sys.stdout.write(
                reports.who_clicked_csv(reports.who_clicked(session, data["run"]["id"]))
            )
            return
    if as_json:
        print_json(data)
    elif as_csv:
        sys.stdout.write(reports.report_csv(data))
    else:
        _print_report(data)


def _print_report(data: dict[str, Any]) -> None:
    campaign = data["campaign"]
    console.print(f"campaign {campaign['id']}: {campaign['name']} [{campaign['status']}]")
    run = data["run"]
    if run is None:
        console.print("  no run yet")
        return
    d = data["delivery"]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    console.print(f"  run {run['id']} [{run['status']}] {run['occurrence_at']}")
    for slug, how in run["tracking"].items():
        console.print(f"  tracking on {slug}: {how}")
    console.print(
        f"  recipients {d['recipients']}, sent {d['sent']}, delivered {d['delivered']}, "
        f"deferred {d['deferred']}, failed {d['failed']}, suppressed {d['suppressed']}"
    )
    u = d["unsubscribes"]
    console.print(
        f"  bounced {d['bounced']['hard']} hard / {d['bounced']['soft']} soft, "
        f"complaints {d['complaints']}, unsubscribes {u['total']} "
        f"(one-click {u['one_click']}, page {u['page']}, mailto {u['mailto']})"
    )
    for kind in ("opens", "clicks"):
        e = data[kind]
        extra = f", click-to-open {pct(e['click_to_open'])}" if kind == "clicks" else ""
        console.print(
            f"  {kind}: unique {e['unique']['human']} human + {e['unique']['machine']} machine, "
            f"total {e['total']['human']} human + {e['total']['machine']} machine, "
            f"rate {pct(e['rate'])}{extra}"
        )
    for reason, count in data["machine_reasons"].items():
        console.print(f"    machine: {count} × {reason}")
    for link in data["links"]:
        console.print(
            f"  link {link['position']}: {link['unique']['human']} readers, "
            f"{link['total']['human']} human + {link['total']['machine']} machine clicks  "
            f"{link['destination']}"
        )
    if len(data["runs"]) > 1:
        for r in data["runs"]:
            console.print(
                f"  run {r['run']} {r['occurrence_at'][:16]}: delivered {r['delivered']}, "
                f"opens {pct(r['open_rate'])}, clicks {pct(r['click_rate'])}, "
                f"unsubscribes {r['unsubscribes']}"
            )


@app.command("links")
def campaigns_links(
    run_id: int,
    fix: Annotated[
        tuple[int, str] | None,
        typer.Option("--fix", help="POSITION URL: send later clicks on that link there."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """A run's tracked links by position; --fix corrects a broken one after sending."""
    from newsletter.tracking.links import correct_link, run_links

    with open_session(settings()) as session:
        if fix is not None:
            correct_link(session, run_id, fix[0], fix[1])
        rows = [
            {"position": link.position, "url": link.url, "destination": link.destination}
            for link in run_links(session, run_id)
        ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        moved = "" if row["url"] == row["destination"] else f"  (was {row['url']})"
        console.print(f"{row['position']:>4}  {row['destination']}{moved}")

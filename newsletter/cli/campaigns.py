"""`newsletter campaigns …`: compose, preview, test, schedule, pause, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
        )
        campaign_id = campaign.id
    if as_json:
        print_json({"id": campaign_id, "status": "draft"})
    else:
        console.print(f"campaign {campaign_id} created (draft)")


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

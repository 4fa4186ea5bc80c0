"""The `newsletter` command: staff and ops face of the service."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from newsletter.config import Settings, load_settings
from newsletter.db import is_migrated, make_engine, make_sessionmaker, session_scope, upgrade
from newsletter.errors import BrokerUnavailableError, ConfigError, NewsletterError

# User text (CSV cells, names, subjects) is printed as it is: no Rich markup, and no
# wrapping, so an error stays one line in logs too.
console = Console(markup=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

app = typer.Typer(
    help="Self-hosted newsletters: articles in series, campaigns, Celery delivery.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
articles_app = typer.Typer(help="Articles and series.", no_args_is_help=True)
lists_app = typer.Typer(help="Mailing lists.", no_args_is_help=True)
subscribers_app = typer.Typer(help="Subscribers.", no_args_is_help=True)
campaigns_app = typer.Typer(
    help="Campaigns: compose, preview, test, schedule.", no_args_is_help=True
)
scheduler_app = typer.Typer(help="The scheduler process.", no_args_is_help=True)
series_app = typer.Typer(
    help="Series: articles in order, with previous and next.", no_args_is_help=True
)
feeds_app = typer.Typer(help="RSS/Atom feeds polled for new articles.", no_args_is_help=True)
sequences_app = typer.Typer(
    help="Drip sequences: a series, one article at a time.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(articles_app, name="articles")
app.add_typer(lists_app, name="lists")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(campaigns_app, name="campaigns")
app.add_typer(scheduler_app, name="scheduler")
app.add_typer(sequences_app, name="sequences")
app.add_typer(feeds_app, name="feeds")
app.add_typer(series_app, name="series")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DRY_RUN_ROWS_SHOWN = 10  # a dry run shows the first bad rows, not all of them


def settings() -> Settings:
    return load_settings()


@contextmanager
def open_session(cfg: Settings, require_schema: bool = True) -> Iterator[Session]:
    engine = make_engine(cfg.database_url)
    try:
        if require_schema and not is_migrated(engine):
            raise ConfigError("the database has no schema yet: run `newsletter db upgrade` first")
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def report_problems(problems: Sequence[object], warnings: Sequence[object] = ()) -> None:
    """Skipped items, then warnings about items that were imported all the same."""
    for problem in problems:
        err_console.print(f"skipped {problem}", style="yellow")
    for warning in warnings:
        err_console.print(f"warning {warning}", style="yellow")


# --- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    cfg = settings()
    engine = make_engine(cfg.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    console.print("database is up to date")


# --- articles -------------------------------------------------------------------------


@articles_app.command("import")
def articles_import(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Markdown files or folders (Jekyll, Hugo), WordPress (WXR) or Ghost "
            "exports, RSS/Atom files or URLs."
        ),
    ],
    series: Annotated[
        str | None, typer.Option(help="Put the articles of a feed into this series.")
    ] = None,
    site_url: Annotated[
        str,
        typer.Option(
            help="Address of the old site: its relative links and images are made absolute."
        ),
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be imported; write nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Import articles: Markdown with YAML or TOML front matter (Jekyll and Hugo sites
    too), WordPress and Ghost exports, RSS/Atom feeds. The same slug (or feed entry id)
    updates, never duplicates."""
    from newsletter.content.sources import import_sources

    with open_session(settings()) as session:
        report = import_sources(
            session, sources, series_slug=series, site_url=site_url, dry_run=dry_run
        )
    if as_json:
        print_json(report.as_json())
    else:
        report_problems(report.problems, report.warnings)
        done = "dry run, nothing written: " if dry_run else ""
        console.print(f"articles: {done}{report.summary()}")
    if report.problems and not report.imported:
        raise typer.Exit(1)


def _print_series(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    console.print(f"{data['slug']}: {data['title']}")
    for a in data["articles"]:
        state = "" if a["published"] else "  (not published)"
        console.print(f"  {a['position']:>3}. {a['slug']:<36} {a['title']}{state}")


@series_app.command("create")
def series_create(
    slug: str,
    title: Annotated[str, typer.Option(help="Shown in emails as the series name.")],
    description: str = "",
) -> None:
    """Create an empty series."""
    from newsletter.content.editing import create_series

    with open_session(settings()) as session:
        create_series(session, slug, title, description)
    console.print(f"series {slug} created")


@series_app.command("list")
def series_list(as_json: JsonOption = False) -> None:
    """Every series with its number of articles."""
    from newsletter.content.editing import list_series

    with open_session(settings()) as session:
        rows = list_series(session)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['slug']:<36} {r['articles']:>4} articles  {r['title']}")


@series_app.command("show")
def series_show(slug: str, as_json: JsonOption = False) -> None:
    """The series' articles in order (drafts and future ones marked)."""
    from newsletter.content.editing import describe
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)


@series_app.command("reorder")
def series_reorder(
    slug: str,
    articles: Annotated[str, typer.Argument(help="Every article slug, comma-separated.")],
    as_json: JsonOption = False,
) -> None:
    """Set the order of the whole series."""
    from newsletter.content.editing import describe, reorder
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        reorder(session, slug, list(_split(articles)))
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)


@series_app.command("insert")
def series_insert(
    slug: str,
    article: str,
    at: Annotated[int, typer.Option(help="Position, 1 = first.")],
    as_json: JsonOption = False,
) -> None:
    """Put an article into the series at a position (it leaves any other series)."""
    from newsletter.content.editing import describe, insert
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        insert(session, slug, article, at)
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)


@series_app.command("remove")
def series_remove(slug: str, article: str, as_json: JsonOption = False) -> None:
    """Move an article out of the series; the others close the gap."""
    from newsletter.content.editing import describe, move_out
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        move_out(session, slug, article)
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)


@feeds_app.command("add")
def feeds_add(
    url: str,
    series: Annotated[str | None, typer.Option(help="Series for the feed's articles.")] = None,
    every: Annotated[str, typer.Option(help="How often to poll, e.g. 30m, 1h, 1d.")] = "1h",
) -> None:
    """Poll a feed for new entries (the scheduler imports them; RSS-to-email)."""
    from newsletter.content.feeds import add_feed, parse_every

    with open_session(settings()) as session:
        feed = add_feed(session, url, series_slug=series, every_seconds=parse_every(every))
        feed_id = feed.id
    console.print(f"feed {feed_id} added; the scheduler polls it every {every}")


@feeds_app.command("list")
def feeds_list(as_json: JsonOption = False) -> None:
    """Polled feeds with their last poll and error."""
    from newsletter.content.feeds import list_feeds

    with open_session(settings()) as session:
        rows = [
            {
                "id": f.id,
                "url": f.url,
                "series": f.series.slug if f.series else None,
                "every_seconds": f.every_seconds,
                "last_polled_at": f.last_polled_at.isoformat() if f.last_polled_at else None,
                "next_poll_at": f.next_poll_at.isoformat() if f.next_poll_at else None,
                "last_error": f.last_error,
            }
            for f in list_feeds(session)
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        state = f"error: {r['last_error']}" if r["last_error"] else f"polled {r['last_polled_at']}"
        console.print(f"{r['id']:>4}  {r['url']}  every {r['every_seconds']}s  {state}")


@articles_app.command("list")
def articles_list(as_json: JsonOption = False) -> None:
    """Articles, newest first, with their series and position."""
    from sqlalchemy import select

    from newsletter.content.models import Article

    with open_session(settings()) as session:
        articles = session.scalars(
            select(Article).order_by(Article.published_at.desc().nulls_first(), Article.id)
        ).all()
        rows = [
            {
                "slug": a.slug,
                "title": a.title,
                "published_at": a.published_at.isoformat() if a.published_at else None,
                "series": a.series.slug if a.series else None,
                "position": a.position,
            }
            for a in articles
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        where = f"  [{r['series']} #{r['position']}]" if r["series"] else ""
        console.print(
            f"{r['slug']:<40} {r['published_at'] or 'draft':<26} {r['title']}{where}",
        )


# --- lists and subscribers --------------------------------------------------------------


@lists_app.command("create")
def lists_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Name shown to subscribers.")],
    opt_in: Annotated[str, typer.Option(help="single or double opt-in.")] = "double",
    description: str = "",
) -> None:
    """Create a mailing list."""
    from newsletter.audience.lists import create_list
    from newsletter.audience.models import OptIn
    from newsletter.errors import InvalidInputError

    try:
        mode = OptIn(opt_in)
    except ValueError as exc:
        raise InvalidInputError("--opt-in must be single or double") from exc
    with open_session(settings()) as session:
        create_list(session, slug, name, opt_in=mode, description=description)
    console.print(f"list {slug} created")


@lists_app.command("list")
def lists_list(as_json: JsonOption = False) -> None:
    """Mailing lists with their confirmed members."""
    from newsletter.audience.lists import list_lists

    with open_session(settings()) as session:
        rows = [
            {"slug": ml.slug, "name": ml.name, "opt_in": ml.opt_in.value, "confirmed": count}
            for ml, count in list_lists(session)
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['slug']:<30} {r['confirmed']:>9} confirmed  {r['name']}")


@subscribers_app.command("import")
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


# --- campaigns ------------------------------------------------------------------------


def _split(values: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (values or "").split(",") if v.strip())


@campaigns_app.command("create")
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
        slugs=_split(articles),
        latest=latest,
        series=series or "",
        since_last=since_last,
        tag=tag or "",
    )
    with open_session(settings()) as session:
        campaign = create_campaign(
            session,
            name=name,
            list_slugs=[s for value in list_slugs for s in _split(value)],
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


@campaigns_app.command("schedule")
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
    from newsletter.campaigns.service import (
        parse_local_time,
        schedule_campaign,
        schedule_recurring,
    )
    from newsletter.db import utcnow
    from newsletter.errors import InvalidInputError
    from newsletter.recurrence import next_occurrence

    if cron is not None:
        if now:
            raise InvalidInputError("--cron and --now do not go together")
        starting = parse_local_time(at, tz) if at else utcnow()
        with open_session(settings()) as session:
            schedule_recurring(
                session,
                campaign_id,
                cron,
                tz,
                skip_if_empty=skip_if_empty,
                starting=starting,
                local_time=local_time,
            )
        first = next_occurrence(cron, tz, starting)
        console.print(
            f"campaign {campaign_id} recurs at {cron!r} in {tz}; next {first.isoformat()} (UTC)"
        )
        return
    if now == (at is not None):
        raise InvalidInputError("give exactly one of --at TIME, --now or --cron EXPR")
    send_at = utcnow() if now else parse_local_time(at or "", tz)
    with open_session(settings()) as session:
        schedule_campaign(session, campaign_id, send_at, tz, local_time=local_time)
    where = " in each subscriber's time zone" if local_time else " (UTC)"
    console.print(f"campaign {campaign_id} scheduled for {send_at.isoformat()}{where}")


@campaigns_app.command("show")
def campaigns_show(campaign_id: int, as_json: JsonOption = False) -> None:
    """A campaign, its content and the progress of its runs."""
    from newsletter.campaigns.service import describe_campaign, get_campaign

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


@campaigns_app.command("list")
def campaigns_list(as_json: JsonOption = False) -> None:
    """Every campaign with its status."""
    from sqlalchemy import select

    from newsletter.campaigns.models import Campaign

    with open_session(settings()) as session:
        rows = [
            {
                "id": c.id,
                "name": c.name,
                "status": c.status.value,
                "send_at": c.send_at.isoformat() if c.send_at else None,
            }
            for c in session.scalars(select(Campaign).order_by(Campaign.id))
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['id']:>5}  {r['status']:<10} {r['send_at'] or '-':<26} {r['name']}",
        )


@campaigns_app.command("preview")
def campaigns_preview(
    campaign_id: int, out: Annotated[Path, typer.Option(help="HTML file to write.")]
) -> None:
    """Render the campaign as it would be sent now, filled with sample values."""
    from newsletter.delivery.previews import preview_html

    cfg = settings()
    with open_session(cfg) as session:
        html = preview_html(session, campaign_id, cfg)
    out.write_text(html, encoding="utf-8")
    console.print(f"preview written to {out}")


@campaigns_app.command("test")
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


@campaigns_app.command("pause")
def campaigns_pause(campaign_id: int) -> None:
    """Stop sending within a second or two; `resume` continues where it stopped."""
    _control("pause", campaign_id)


@campaigns_app.command("resume")
def campaigns_resume(campaign_id: int) -> None:
    """Continue a paused campaign (the scheduler re-enqueues what is left)."""
    _control("resume", campaign_id)


@campaigns_app.command("cancel")
def campaigns_cancel(campaign_id: int) -> None:
    """Stop for good; what was sent stays recorded, the rest is marked cancelled."""
    _control("cancel", campaign_id)


# --- sequences and the schedule -------------------------------------------------------


@sequences_app.command("create")
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
    as_json: JsonOption = False,
) -> None:
    """Create a drip sequence; the scheduler enrols the list's confirmed members."""
    from newsletter.sequences.service import create_sequence

    with open_session(settings()) as session:
        sequence = create_sequence(
            session,
            series_slug=series,
            list_slug=list_slug,
            every=every,
            cron=cron,
            timezone=tz,
            initial_delay=delay,
            restart_on_rejoin=restart_on_rejoin,
        )
        sequence_id = sequence.id
    if as_json:
        print_json({"id": sequence_id})
    else:
        console.print(f"sequence {sequence_id} created")


@sequences_app.command("list")
def sequences_list(as_json: JsonOption = False) -> None:
    """Every sequence with its enrollments by status."""
    from sqlalchemy import select

    from newsletter.sequences.models import Sequence
    from newsletter.sequences.service import describe_sequence

    with open_session(settings()) as session:
        rows = [
            describe_sequence(session, s)
            for s in session.scalars(select(Sequence).order_by(Sequence.id))
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        period = f"every {r['every_seconds']}s" if r["every_seconds"] else f"cron {r['cron']}"
        console.print(f"{r['id']:>4}  {r['series']} → {r['list']}  {period}  {r['enrollments']}")


@sequences_app.command("show")
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


@app.command("schedule")
def schedule(
    days: Annotated[int, typer.Option(help="How far ahead to look.")] = 14,
    as_json: JsonOption = False,
) -> None:
    """Every upcoming send: campaign occurrences, and sequence steps due per day."""
    from newsletter.campaigns.upcoming import upcoming
    from newsletter.db import utcnow

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


# --- ops ------------------------------------------------------------------------------


@app.command("status")
def status(as_json: JsonOption = False) -> None:
    """Queues, workers and every active run: sent, deferred, failed, pending, rate, ETA."""
    from newsletter.tasks.app import configure
    from newsletter.tasks.status import collect_status

    cfg = settings()
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
        console.print(
            f"run {r.run} ({r.name}) [{r.status}]: {r.sent}/{r.recipients} sent, "
            f"{r.deferred} deferred, {r.failed} failed, {r.pending} pending, "
            f"{r.rate_per_second}/s, ETA {eta}",
        )


# --- processes ------------------------------------------------------------------------


@app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    loglevel: str = "INFO",
) -> None:
    """Start a Celery worker (the same as `celery -A worker worker`); extra args go to Celery."""
    from newsletter.tasks.app import configure

    cfg = settings()
    if cfg.embedded_broker:
        raise BrokerUnavailableError(
            "NEWSLETTER_BROKER_URL is the in-memory broker, which only works inside one "
            "process: set it to redis://… to run separate workers, or use "
            "`newsletter scheduler run`, which runs a worker in-process"
        )
    celery_app = configure(cfg)
    celery_app.worker_main(
        ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", *ctx.args]
    )


@scheduler_app.command("run")
def scheduler_run() -> None:
    """Tick every few seconds until SIGTERM; with the in-memory broker, also run a worker."""
    from newsletter.tasks.app import configure, embedded_worker, runtime
    from newsletter.tasks.scheduler import Stopper, run_forever

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = settings()
    _check_schema(cfg)
    configure(cfg)
    stopper = Stopper()
    stopper.install()
    if cfg.embedded_broker:
        with embedded_worker():
            # Celery's worker set-up lowers the root logger to WARNING; keep ours.
            logging.getLogger("newsletter").setLevel(logging.INFO)
            run_forever(runtime(), stopper)
    else:
        run_forever(runtime(), stopper)


@scheduler_app.command("tick")
def scheduler_tick(
    at: Annotated[
        str | None,
        typer.Option(help="Act as if it were this ISO time (UTC unless an offset is given)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run exactly one scheduler tick; with the in-memory broker also run the work it enqueued."""
    from newsletter.campaigns.service import parse_local_time
    from newsletter.tasks.app import configure, runtime
    from newsletter.tasks.scheduler import tick

    cfg = settings()
    _check_schema(cfg)
    celery_app = configure(cfg)
    if cfg.embedded_broker:
        # No worker process to hand work to: run what the tick enqueues right here.
        celery_app.conf.task_always_eager = True
    now = parse_local_time(at, "UTC") if at else None
    report = tick(runtime(), now)
    data = {
        "started_runs": report.started_runs,
        "sequence_steps": report.sequence_steps,
        "retried_chunks": len(report.retried_chunks),
        "finished_runs": report.finished_runs,
    }
    if as_json:
        print_json(data)
    else:
        console.print(
            f"tick: started runs {report.started_runs or '-'}, "
            f"sequence steps {report.sequence_steps}, retried chunks "
            f"{len(report.retried_chunks)}, finished runs {report.finished_runs or '-'}",
        )


def _check_schema(cfg: Settings) -> None:
    engine = make_engine(cfg.database_url)
    try:
        if not is_migrated(engine):
            raise ConfigError("the database has no schema yet: run `newsletter db upgrade` first")
    finally:
        engine.dispose()


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the public web app (unsubscribe, preferences, archive, /healthz)."""
    import uvicorn

    from newsletter.web.app import create_app

    cfg = settings()
    _check_schema(cfg)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="info")


@app.command("bench")
def bench(
    subscribers: Annotated[int, typer.Option(help="Recipients of the benchmark digest.")] = 100_000,
    smtp: Annotated[
        str | None, typer.Option(help="SMTP URL to send to; default: start a local sink.")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Worker processes (Redis broker).")] = 2,
    as_json: JsonOption = False,
) -> None:
    """Send a digest to N generated subscribers through the configured database, broker
    and workers, and print end-to-end and per-stage figures."""
    from rich.progress import Progress
    from rich.table import Table

    from newsletter.bench import as_rows, result_json, run_bench
    from newsletter.config import parse_mail_url

    cfg = settings()
    if smtp is not None:
        parse_mail_url(smtp)
    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("sending", total=subscribers)
        result = run_bench(
            cfg,
            subscribers,
            smtp,
            concurrency,
            lambda done, total: bar.update(task, completed=done),
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


@app.command("demo")
def demo(
    subscribers: Annotated[int, typer.Option(help="Generated subscribers.")] = 1000,
    folder: Annotated[
        Path, typer.Option("--dir", help="Folder for the demo's database, outbox and preview.")
    ] = Path("newsletter-demo"),
) -> None:
    """Send the sample series to generated subscribers on the embedded default."""
    from newsletter.demo import run_demo

    run_demo(folder, subscribers, console)


def _mount_area_commands() -> None:
    # Command groups that live beside their domain; imported here, after this module's
    # helpers exist, because their commands use them.
    from newsletter.audience.cli import app as data_rights_app
    from newsletter.bounces.cli import app as bounces_app
    from newsletter.campaigns.templates_cli import app as templates_app

    app.add_typer(bounces_app, name="bounces")
    app.add_typer(templates_app, name="templates")
    subscribers_app.registered_commands.extend(data_rights_app.registered_commands)


_mount_area_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: every NewsletterError becomes one line on stderr and exit code 1.

    Click handles usage errors itself (a message and exit code 2).
    """
    try:
        app(args=list(argv) if argv is not None else None, prog_name="newsletter")
    except NewsletterError as exc:
        fail(str(exc))
    except (OperationalError, ProgrammingError) as exc:
        fail(f"database: {' '.join(str(exc.orig).split())}")


def fail(message: str) -> None:
    err_console.print(f"error: {message}", style="red")
    sys.exit(1)

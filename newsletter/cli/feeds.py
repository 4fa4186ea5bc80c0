"""`newsletter feeds …`: RSS/Atom feeds polled for new articles."""

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

app = typer.Typer(help="RSS/Atom feeds polled for new articles.", no_args_is_help=True)


@app.command("add")
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


@app.command("list")
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

"""`newsletter articles …`: import and list articles."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.common import (
    JsonOption,
    console,
    open_session,
    print_json,
    report_problems,
    settings,
)

app = typer.Typer(help="Articles: import Markdown and feeds, list.", no_args_is_help=True)


@app.command("import")
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
    from newsletter.content.feeds import feed_fetcher
    from newsletter.content.sources import import_sources

    cfg = settings()
    with open_session(cfg) as session:
        report = import_sources(
            session,
            sources,
            series_slug=series,
            site_url=site_url,
            dry_run=dry_run,
            fetch=feed_fetcher(cfg.feeds_allowed),
        )
    if as_json:
        print_json(report.as_json())
    else:
        report_problems(report.problems, report.warnings)
        done = "dry run, nothing written: " if dry_run else ""
        console.print(f"articles: {done}{report.summary()}")
    if report.problems and not report.imported:
        raise typer.Exit(1)


@app.command("list")
def articles_list(as_json: JsonOption = False) -> None:
    """Articles, newest first, with their series and position."""
    from newsletter.content.editing import list_articles

    with open_session(settings()) as session:
        articles = list_articles(session)
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

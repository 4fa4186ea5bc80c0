"""`newsletter articles …`: import and list articles."""

from __future__ import annotations

from pathlib import Path
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
        list[str], typer.Argument(help="Markdown files or folders, RSS/Atom files or URLs.")
    ],
    series: Annotated[
        str | None, typer.Option(help="Put the articles of a feed into this series.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Import articles: Markdown with front matter (the same slug updates, never
    duplicates) or RSS/Atom feeds (the same entry id updates, never duplicates)."""
    from newsletter.content.feeds import import_feed, is_feed_source
    from newsletter.content.importer import import_articles
    from newsletter.importing import ImportReport

    report = ImportReport()
    with open_session(settings()) as session:
        markdown = [Path(s) for s in sources if not is_feed_source(s)]
        for source in (s for s in sources if is_feed_source(s)):
            report.merge(import_feed(session, source, series_slug=series))
        if markdown:
            report.merge(import_articles(session, markdown))
    if as_json:
        print_json(report.as_json())
    else:
        report_problems(report.problems)
        console.print(
            f"articles: {report.created} created, {report.updated} updated, "
            f"{report.unchanged} unchanged, {len(report.problems)} problems"
        )
    if report.problems and not (report.created or report.updated or report.unchanged):
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

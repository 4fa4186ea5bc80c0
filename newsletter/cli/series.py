"""`newsletter series …`: articles in order, with previous and next."""

from __future__ import annotations

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

app = typer.Typer(help="Series: articles in order, with previous and next.", no_args_is_help=True)


def _print_series(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    console.print(f"{data['slug']}: {data['title']}")
    for a in data["articles"]:
        state = "" if a["published"] else "  (not published)"
        console.print(f"  {a['position']:>3}. {a['slug']:<36} {a['title']}{state}")


@app.command("create")
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


@app.command("list")
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


@app.command("show")
def series_show(slug: str, as_json: JsonOption = False) -> None:
    """The series' articles in order (drafts and future ones marked)."""
    from newsletter.content.editing import describe
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)


@app.command("reorder")
def series_reorder(
    slug: str,
    articles: Annotated[str, typer.Argument(help="Every article slug, comma-separated.")],
    as_json: JsonOption = False,
) -> None:
    """Set the order of the whole series."""
    from newsletter.content.editing import describe, reorder
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        reorder(session, slug, list(split_values(articles)))
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)


@app.command("insert")
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


@app.command("remove")
def series_remove(slug: str, article: str, as_json: JsonOption = False) -> None:
    """Move an article out of the series; the others close the gap."""
    from newsletter.content.editing import describe, move_out
    from newsletter.content.series import get_series

    with open_session(settings()) as session:
        move_out(session, slug, article)
        data = describe(session, get_series(session, slug))
    _print_series(data, as_json)

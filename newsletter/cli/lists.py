"""`newsletter lists …`: mailing lists."""

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

app = typer.Typer(help="Mailing lists.", no_args_is_help=True)


@app.command("create")
def lists_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Name shown to subscribers.")],
    opt_in: Annotated[str, typer.Option(help="single or double opt-in.")] = "double",
    description: str = "",
    public: Annotated[
        bool,
        typer.Option(
            "--public/--private",
            help="Offer it on the sign-up form and preferences pages (default: private).",
        ),
    ] = False,
) -> None:
    """Create a mailing list (private unless --public: only staff add people to it)."""
    from newsletter.audience.lists import create_list
    from newsletter.audience.models import OptIn
    from newsletter.errors import InvalidInputError

    try:
        mode = OptIn(opt_in)
    except ValueError as exc:
        raise InvalidInputError("--opt-in must be single or double") from exc
    with open_session(settings()) as session:
        create_list(session, slug, name, opt_in=mode, description=description, public=public)
    console.print(f"list {slug} created")


@app.command("list")
def lists_list(as_json: JsonOption = False) -> None:
    """Mailing lists with their confirmed members."""
    from newsletter.audience.lists import list_lists

    with open_session(settings()) as session:
        rows = [
            {
                "slug": ml.slug,
                "name": ml.name,
                "opt_in": ml.opt_in.value,
                "public": ml.public,
                "confirmed": count,
            }
            for ml, count in list_lists(session)
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        shown = "public " if r["public"] else "private"
        console.print(f"{r['slug']:<30} {shown} {r['confirmed']:>9} confirmed  {r['name']}")

"""`newsletter lists …`: mailing lists, their sender identity and archive."""

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

OrganizationOption = Annotated[
    str | None, typer.Option(help="Who sends this list (else NEWSLETTER_ORGANIZATION).")
]
PostalAddressOption = Annotated[
    str | None,
    typer.Option(help="The sender's postal address (else NEWSLETTER_POSTAL_ADDRESS)."),
]
FooterNoteOption = Annotated[
    str | None, typer.Option(help="A note in every email's footer (else NEWSLETTER_FOOTER_NOTE).")
]
ArchiveOption = Annotated[
    str | None,
    typer.Option(help="public: listed in the web archive; private: only at its email's link."),
]


def _archive(value: str | None) -> object:
    from newsletter.audience.models import ArchiveVisibility
    from newsletter.errors import InvalidInputError

    if value is None:
        return None
    try:
        return ArchiveVisibility(value)
    except ValueError as exc:
        raise InvalidInputError("--archive must be public or private") from exc


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
    archive: ArchiveOption = "private",
    organization: OrganizationOption = None,
    postal_address: PostalAddressOption = None,
    footer_note: FooterNoteOption = None,
) -> None:
    """Create a mailing list: private unless --public (only staff add people to it), its
    archive private unless --archive public."""
    from newsletter.audience.lists import create_list
    from newsletter.audience.models import ArchiveVisibility, OptIn
    from newsletter.errors import InvalidInputError

    try:
        mode = OptIn(opt_in)
    except ValueError as exc:
        raise InvalidInputError("--opt-in must be single or double") from exc
    visibility = _archive(archive)
    assert isinstance(visibility, ArchiveVisibility)
    with open_session(settings()) as session:
        create_list(
            session,
            slug,
            name,
            opt_in=mode,
            description=description,
            archive=visibility,
            organization=organization or "",
            postal_address=postal_address or "",
            footer_note=footer_note or "",
            public=public,
        )
    console.print(f"list {slug} created")


@app.command("update")
def lists_update(
    slug: str,
    name: Annotated[str | None, typer.Option(help="Name shown to subscribers.")] = None,
    archive: ArchiveOption = None,
    organization: OrganizationOption = None,
    postal_address: PostalAddressOption = None,
    footer_note: FooterNoteOption = None,
) -> None:
    """Change a list's name, sender identity or archive ("" resets a field to the setting)."""
    from newsletter.audience.lists import update_list
    from newsletter.audience.models import ArchiveVisibility

    visibility = _archive(archive)
    with open_session(settings()) as session:
        update_list(
            session,
            slug,
            name=name,
            organization=organization,
            postal_address=postal_address,
            footer_note=footer_note,
            archive=visibility if isinstance(visibility, ArchiveVisibility) else None,
        )
    console.print(f"list {slug} updated")


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
                "archive": ml.archive.value,
                "organization": ml.organization,
                "postal_address": ml.postal_address,
                "confirmed": count,
            }
            for ml, count in list_lists(session)
        ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        shown = "public " if r["public"] else "private"
        console.print(
            f"{r['slug']:<30} {shown} {r['confirmed']:>9} confirmed  {r['archive']:<7}  {r['name']}"
        )

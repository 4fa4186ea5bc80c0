"""`newsletter templates …`: save, list and show staff templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter.cli.common import JsonOption, console, open_session, print_json, settings
from newsletter.errors import InvalidInputError

app = typer.Typer(
    help="Staff email templates (Jinja2, checked and rendered in a sandbox).",
    no_args_is_help=True,
)


def _read_source(path: Path | None, option: str) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{option} {path}: not UTF-8 text") from exc
    except OSError as exc:
        raise InvalidInputError(f"{option} {path}: {exc.strerror}") from exc


@app.command("save")
def templates_save(
    name: Annotated[str, typer.Argument(help="Lower-case words joined by hyphens.")],
    html: Annotated[Path, typer.Option("--html", help="Jinja2 HTML file.")],
    subject: Annotated[
        str,
        typer.Option(help="Jinja2 subject; {{ subject }} is the campaign's. Default: theirs."),
    ] = "",
    text: Annotated[
        Path | None, typer.Option("--text", help="Jinja2 text file; default: the HTML as text.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create or replace a template, after checking that it renders safely and shows the
    mandatory footer: write {{ footer }} where it goes (HTML and text; style it freely)."""
    from newsletter.campaigns.templates import describe_template, save_template

    sources = (_read_source(html, "--html"), _read_source(text, "--text"))
    with open_session(settings()) as session:
        template = save_template(session, name, subject, *sources)
        session.flush()
        data = describe_template(template)
    if as_json:
        print_json(data)
    else:
        console.print(f"template {name} saved")


@app.command("list")
def templates_list(as_json: JsonOption = False) -> None:
    """Stored templates, by name."""
    from newsletter.campaigns.templates import describe_template, list_templates

    with open_session(settings()) as session:
        rows = [describe_template(t) for t in list_templates(session)]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        sizes = row["sizes"]
        console.print(
            f"{row['name']:<30} updated {row['updated_at']}  "
            f"html {sizes['html']:,} chars, text {sizes['text']:,} chars"
        )


@app.command("show")
def templates_show(name: str, as_json: JsonOption = False) -> None:
    """A template's subject, HTML and text sources."""
    from newsletter.campaigns.templates import describe_template, get_template

    with open_session(settings()) as session:
        data = describe_template(get_template(session, name), with_source=True)
    if as_json:
        print_json(data)
        return
    # Sources are printed as they are (typer.echo: no Rich markup, emoji or wrapping).
    typer.echo(f"template {data['name']} (updated {data['updated_at']})")
    typer.echo(f"subject: {data['subject'] or '(the campaign subject)'}")
    typer.echo("--- html ---")
    typer.echo(data["html"], nl=not data["html"].endswith("\n"))
    typer.echo("--- text ---")
    typer.echo(data["text"] or "(derived from the HTML)", nl=not data["text"].endswith("\n"))

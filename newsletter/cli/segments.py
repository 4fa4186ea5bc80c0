"""`newsletter segments …`: saved filters over subscribers, and their live count."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from newsletter.cli.common import JsonOption, console, open_session, print_json, settings

app = typer.Typer(
    help="Segments: saved filters over subscribers (rules as one line or JSON).",
    no_args_is_help=True,
)

RulesArgument = Annotated[
    str,
    typer.Argument(
        help='The rules in one line, e.g. \'status=confirmed and attr.city in ("Oslo", '
        '"Bergen") and clicked_within=30d\', or JSON (starting with "{").'
    ),
]


def _rules(text: str) -> dict[str, Any] | str:
    """JSON when it looks like JSON, else the one-line form."""
    from newsletter.errors import InvalidInputError

    if not text.lstrip().startswith("{"):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"rules: not valid JSON ({exc.msg} at {exc.pos})") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("rules: JSON rules are an object")
    return data


@app.command("create")
def segments_create(
    slug: str,
    rules: RulesArgument,
    name: Annotated[str | None, typer.Option(help="A name for staff (default: the slug).")] = None,
    description: str = "",
    as_json: JsonOption = False,
) -> None:
    """Save a segment; its rules are checked and every list it names must exist."""
    from newsletter.services.segments import create_segment, describe_segment

    with open_session(settings()) as session:
        segment = create_segment(session, slug, name or slug, _rules(rules), description)
        out = describe_segment(session, segment, count=True)
    if as_json:
        print_json(out)
    else:
        console.print(f"segment {slug} created: {out['line']} ({out['count']} match now)")


@app.command("update")
def segments_update(
    slug: str,
    rules: Annotated[str | None, typer.Option(help="New rules (one line or JSON).")] = None,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
) -> None:
    """Change a segment; campaigns using it see the change at their next run."""
    from newsletter.services.segments import describe_segment, update_segment

    with open_session(settings()) as session:
        segment = update_segment(
            session,
            slug,
            name=name,
            rules=_rules(rules) if rules is not None else None,
            description=description,
        )
        line = describe_segment(session, segment)["line"]
    console.print(f"segment {slug}: {line}")


@app.command("delete")
def segments_delete(slug: str) -> None:
    """Remove a segment no campaign uses."""
    from newsletter.services.segments import delete_segment

    with open_session(settings()) as session:
        delete_segment(session, slug)
    console.print(f"segment {slug} deleted")


@app.command("list")
def segments_list(as_json: JsonOption = False) -> None:
    """Every segment, with its rules in one line."""
    from newsletter.services.segments import describe_segment, list_segments

    with open_session(settings()) as session:
        rows = [describe_segment(session, s) for s in list_segments(session)]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        console.print(f"{row['slug']}\t{row['name']}\t{row['line']}", markup=False)
    if not rows:
        console.print("no segments yet: `newsletter segments create SLUG 'RULES'`")


@app.command("show")
def segments_show(slug: str, as_json: JsonOption = False) -> None:
    """A segment: its rules (one line and JSON) and how many match now."""
    from newsletter.services.segments import describe_segment, get_segment

    with open_session(settings()) as session:
        out = describe_segment(session, get_segment(session, slug), count=True)
    if as_json:
        print_json(out)
        return
    console.print(f"{out['slug']}: {out['name']}", markup=False)
    console.print(f"rules: {out['line']}", markup=False)
    console.print(json.dumps(out["rules"], indent=2), markup=False)
    console.print(f"matching now: {out['count']}")


@app.command("count")
def segments_count(
    segment: Annotated[str, typer.Argument(help="A segment's slug, or rules (one line or JSON).")],
    list_slugs: Annotated[
        list[str] | None,
        typer.Option("--list", help="Only confirmed members of this list (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """How many subscribers a saved segment, or rules not saved yet, match now."""
    from newsletter.services.segments import count_matching, saved_rules

    with open_session(settings()) as session:
        rules = saved_rules(session, segment) or _rules(segment)
        count = count_matching(session, rules, list(list_slugs or []) or None)
    if as_json:
        print_json({"count": count})
    else:
        console.print(str(count))

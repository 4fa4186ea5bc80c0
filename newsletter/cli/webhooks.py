"""`newsletter webhooks …`: endpoints that receive events, and their delivery log."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter.cli.common import JsonOption, console, open_session, print_json, settings

app = typer.Typer(
    help="Outgoing webhooks: endpoints, test events, delivery log.", no_args_is_help=True
)


@app.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(help="https:// URL that receives the events.")],
    events: Annotated[
        list[str],
        typer.Option("--event", help="An event to send (repeatable), or * for all of them."),
    ],
    description: str = "",
    as_json: JsonOption = False,
) -> None:
    """Register an endpoint; prints its signing secret once."""
    from newsletter.services.webhooks import create_endpoint, describe_endpoint

    cfg = settings()
    with open_session(cfg) as session:
        made = create_endpoint(session, cfg, url, events, description)
        out = {**describe_endpoint(made.endpoint), "secret": made.secret}
    if as_json:
        print_json(out)
    else:
        console.print(f"webhook {out['id']} created for {url}", markup=False)
        console.print(f"signing secret (shown once): {made.secret}", markup=False)


@app.command("list")
def webhooks_list(as_json: JsonOption = False) -> None:
    """Every endpoint: URL, events, enabled, failures in a row."""
    from newsletter.services.webhooks import describe_endpoint, list_endpoints

    with open_session(settings()) as session:
        rows = [describe_endpoint(e) for e in list_endpoints(session)]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        state = "enabled" if row["enabled"] else f"disabled ({row['disabled_reason']})"
        console.print(
            f"{row['id']}\t{row['url']}\t{','.join(row['events'])}\t{state}\t"
            f"failures in a row: {row['failure_count']}",
            markup=False,
        )
    if not rows:
        console.print("no webhooks yet: `newsletter webhooks create URL --event '*'`")


@app.command("test")
def webhooks_test(endpoint_id: int) -> None:
    """Queue a webhook.test event for the endpoint (sent at the next scheduler tick);
    see `webhooks deliveries` for its answer."""
    from newsletter.services.webhooks import send_test

    with open_session(settings()) as session:
        row = send_test(session, endpoint_id)
        event_id = row.event_id
    console.print(f"test event {event_id} queued for webhook {endpoint_id}")


@app.command("deliveries")
def webhooks_deliveries(
    endpoint_id: int,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: JsonOption = False,
) -> None:
    """The endpoint's latest attempts: event, status, duration, answer."""
    from newsletter.services.webhooks import describe_attempt, list_attempts

    with open_session(settings()) as session:
        rows = [describe_attempt(a, o) for a, o in list_attempts(session, endpoint_id, 0, limit)]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        answer = row["status_code"] if row["status_code"] is not None else row["error"]
        console.print(
            f"{row['attempted_at']}\t{row['event']}\t{'ok' if row['ok'] else 'failed'}\t"
            f"{answer}\t{row['duration_ms']} ms\t{row['response_excerpt'][:80]!r}",
            markup=False,
        )
    if not rows:
        console.print("no attempts yet")


@app.command("enable")
def webhooks_enable(endpoint_id: int) -> None:
    """Enable an endpoint again; its waiting events go out."""
    from newsletter.services.webhooks import set_enabled

    with open_session(settings()) as session:
        set_enabled(session, endpoint_id, True)
    console.print(f"webhook {endpoint_id} enabled")


@app.command("disable")
def webhooks_disable(endpoint_id: int) -> None:
    """Stop sending to an endpoint (its events wait)."""
    from newsletter.services.webhooks import set_enabled

    with open_session(settings()) as session:
        set_enabled(session, endpoint_id, False)
    console.print(f"webhook {endpoint_id} disabled")


@app.command("delete")
def webhooks_delete(endpoint_id: int) -> None:
    """Remove an endpoint, its waiting events and its log."""
    from newsletter.services.webhooks import delete_endpoint

    with open_session(settings()) as session:
        delete_endpoint(session, endpoint_id)
    console.print(f"webhook {endpoint_id} deleted")

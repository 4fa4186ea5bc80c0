"""What every command group shares: settings, a database session, printing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from newsletter import metrics
from newsletter.accounts.audit import Actor, act_as
from newsletter.cli.hints import with_hint
from newsletter.config import Settings, load_settings
from newsletter.db import is_migrated, make_engine, make_sessionmaker, schema_problem, session_scope
from newsletter.errors import ConfigError, Problem

# User text (CSV cells, names, subjects) is printed as it is: no Rich markup, and no
# wrapping, so an error stays one line in logs too.
console = Console(markup=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DRY_RUN_ROWS_SHOWN = 10  # a dry run shows the first bad rows, not all of them


def settings() -> Settings:
    """The settings, read once per command; what the command counts (imports, bounces)
    goes into the metrics folder that the servers' scrapes read."""
    cfg = load_settings()
    metrics.configure(cfg.metrics_directory)
    return cfg


def check_schema(cfg: Settings) -> None:
    """ConfigError unless the database's schema is at this version's head migration:
    a long-running process on an older (or newer) schema would fail later, mid-send."""
    engine = make_engine(cfg.database_url)
    try:
        problem = schema_problem(engine)
    finally:
        engine.dispose()
    if problem is not None:
        raise ConfigError(problem)


@contextmanager
def open_session(cfg: Settings, require_schema: bool = True) -> Iterator[Session]:
    """A session that commits when the command succeeds; what it changes is audited
    as done by the CLI (someone with a shell on the server)."""
    engine = make_engine(cfg.database_url)
    try:
        if require_schema and not is_migrated(engine):
            raise ConfigError("the database has no schema yet: run `newsletter db upgrade` first")
        with session_scope(make_sessionmaker(engine)) as session:
            act_as(session, Actor.cli())
            yield session
    finally:
        engine.dispose()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def report_problems(problems: Sequence[object], warnings: Sequence[object] = ()) -> None:
    """Skipped items, then warnings about items that were imported all the same; a
    `Problem` with a remedy the CLI knows ends with the option that fixes it."""
    for problem in problems:
        err_console.print(f"skipped {_hinted(problem)}", style="yellow")
    for warning in warnings:
        err_console.print(f"warning {_hinted(warning)}", style="yellow")


def _hinted(item: object) -> str:
    return with_hint(item) if isinstance(item, Problem) else str(item)


def split_values(values: str | None) -> tuple[str, ...]:
    """ "a, b,c" → ("a", "b", "c"): a comma-separated option."""
    return tuple(v.strip() for v in (values or "").split(",") if v.strip())

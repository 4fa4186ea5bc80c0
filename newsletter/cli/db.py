"""`newsletter db …`: the database schema."""

from __future__ import annotations

import typer

from newsletter.cli.common import (
    console,
    settings,
)
from newsletter.db import make_engine, upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest version."""
    cfg = settings()
    engine = make_engine(cfg.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    console.print("database is up to date")

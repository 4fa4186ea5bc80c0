"""Alembic environment: the engine comes from newsletter.db.upgrade()."""

from __future__ import annotations

from alembic import context

from newsletter.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    from newsletter.config import load_settings
    from newsletter.db import make_engine

    engine = make_engine(load_settings().database_url)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()

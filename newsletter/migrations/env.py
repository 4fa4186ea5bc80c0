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

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite rebuilds a table to change it ("batch" mode): dropping the old copy
        # with foreign keys on would cascade into every table that references it.
        # The pragma only takes effect outside a transaction, so it is set first.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # ends SQLAlchemy's autobegun transaction; SQLite had none
    try:
        with connection.begin():
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=sqlite,
            )
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"migration left dangling references: {broken[:5]}")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()

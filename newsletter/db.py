"""Engine, sessions, the declarative base and schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from newsletter import metrics
from newsletter.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


JsonType = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine with the per-backend settings the send path relies on; its pool's
    connections are counted in newsletter_db_connections."""
    engine = _make_engine(url)
    _count_connections(engine)
    return engine


def _count_connections(engine: Engine) -> None:
    """Count the pool's connections as they open, close, go out and come back (a
    gauge per process, summed over the live ones when scraped)."""

    @event.listens_for(engine, "connect")
    def _opened(*_: Any) -> None:
        metrics.change_db_connections("open", 1)

    @event.listens_for(engine, "close")
    def _closed(*_: Any) -> None:
        metrics.change_db_connections("open", -1)

    @event.listens_for(engine, "close_detached")
    def _closed_detached(*_: Any) -> None:
        metrics.change_db_connections("open", -1)

    @event.listens_for(engine, "checkout")
    def _out(*_: Any) -> None:
        metrics.change_db_connections("in_use", 1)

    @event.listens_for(engine, "checkin")
    def _back(*_: Any) -> None:
        metrics.change_db_connections("in_use", -1)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the worker write while the scheduler and CLI read; NORMAL
            # sync keeps a commit per delivery cheap while staying crash-safe.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # bad driver names and malformed URLs
        raise ConfigError(f"NEWSLETTER_DATABASE_URL: {exc}") from exc


def upsert_insert(session: Session, table: Any) -> Any:
    """An INSERT for this session's backend that supports `.on_conflict_do_nothing()`:
    the unique rows of the ledger, runs and enrollments are our claims."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise ConfigError(f"cannot reach the database: {exc.orig}") from exc


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(engine), revision)


def is_migrated(engine: Engine) -> bool:
    return "alembic_version" in inspect(engine).get_table_names()


def head_revisions() -> frozenset[str]:
    """The revisions this version's migrations end at (`newsletter db upgrade` goes there)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return frozenset(ScriptDirectory.from_config(cfg).get_heads())


def schema_problem(engine: Engine, heads: frozenset[str] | None = None) -> str | None:
    """None when the database's schema is at this version's head migration; else what
    is wrong, in words (no schema yet, an older one, or one from a newer version)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        if "alembic_version" not in inspect(conn).get_table_names():
            return "the database has no schema yet: run `newsletter db upgrade` first"
        current = frozenset(MigrationContext.configure(conn).get_current_heads())
    wanted = head_revisions() if heads is None else heads
    if current == wanted:
        return None
    return (
        f"the database schema is at revision {', '.join(sorted(current)) or 'none'}, this "
        f"version needs {', '.join(sorted(wanted))}: run `newsletter db upgrade` "
        "(or run the version that made it)"
    )

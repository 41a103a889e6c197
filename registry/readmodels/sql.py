"""Small SQL helpers shared by the projections, for PostgreSQL and SQLite alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from registry.config import Settings


def make_engine(settings: Settings) -> Engine:
    """An engine on the registry's own database (read models live beside the events)."""
    if settings.backend == "sqlite":
        env = settings.eventsourcing_env()
        engine = create_engine(f"sqlite:///{env['SQLITE_DBNAME']}",
                               connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        return engine
    if settings.backend in ("postgresql", "postgres"):
        url = make_url(settings.database_url).set(drivername="postgresql+psycopg")
        return create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
    raise ValueError(f"read models need SQLite or PostgreSQL, not {settings.describe()}")


def upsert_add(conn: Connection, table: Table, keys: Sequence[str],
               rows: Sequence[dict[str, Any]], add: Sequence[str],
               replace: Sequence[str] = ()) -> None:
    """Insert rows, or add their ``add`` columns to the existing row (and overwrite the
    ``replace`` columns): one statement for a whole batch of deltas."""
    if not rows:
        return
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    statement = dialect.insert(table)
    excluded = statement.excluded
    changes: dict[str, Any] = {c: table.c[c] + excluded[c] for c in add}
    changes.update({c: excluded[c] for c in replace})
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes),
                 list(rows))

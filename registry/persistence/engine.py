"""Every engine and connection on the registry's database, made in one place.

The read models and the ledger live beside the events, in the store's own database.
The factories take the settings as what they need of them (``StoreSettings``), not the
settings module: persistence sits below settings, so importing it never makes a cycle.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from registry.persistence.sessions import session_options


class StoreSettings(Protocol):
    """What the engines need of ``registry.settings.Settings``."""

    @property
    def database_url(self) -> str: ...

    @property
    def read_database_url(self) -> str: ...

    @property
    def backend(self) -> str: ...

    def describe(self) -> str: ...

    def eventsourcing_env(self) -> dict[str, str]: ...


def make_engine(settings: StoreSettings) -> Engine:
    """An engine on the registry's own database (read models live beside the events)."""
    if settings.backend == "sqlite":
        env = settings.eventsourcing_env()
        engine = create_engine(f"sqlite:///{env['SQLITE_DBNAME']}", connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        return engine
    if settings.backend in ("postgresql", "postgres"):
        url = make_url(settings.database_url).set(drivername="postgresql+psycopg")
        return create_engine(
            url,
            pool_size=4,
            max_overflow=4,
            pool_pre_ping=True,
            connect_args={"options": _options(url)},
        )
    raise ValueError(f"read models need SQLite or PostgreSQL, not {settings.describe()}")


READS_APPLICATION_NAME = "registry-reads"
"""How the query connections show in ``pg_stat_activity``."""


def make_read_engine(settings: StoreSettings, pool_size: int) -> Engine:
    """An engine for queries only. On PostgreSQL its connections are in autocommit
    (every query is one statement: no BEGIN, no ROLLBACK when handed back) and are not
    pinged before use: a balance query was three round trips and now is one. A
    connection that the database dropped fails its call once (UNAVAILABLE, safe to
    retry) and is replaced. Elsewhere it is ``make_engine``'s."""
    if settings.backend not in ("postgresql", "postgres"):
        return make_engine(settings)
    url = make_url(settings.database_url).set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        connect_args={"application_name": READS_APPLICATION_NAME, "options": _options(url)},
    )


REPLICA_APPLICATION_NAME = "registry-replica-reads"
"""How the query connections to a read replica show in its ``pg_stat_activity``."""


def make_replica_engine(settings: StoreSettings, pool_size: int) -> Engine | None:
    """The query engine on the read replica (``REGISTRY_READ_DATABASE_URL``), None when
    none is configured. Like ``make_read_engine``'s (autocommit, no ping, the URL's TLS
    parameters passed to libpq as the primary's are), and its sessions are read-only
    (``default_transaction_read_only``): a write sent here fails loudly even if the URL
    names a primary by mistake. A hot standby refuses writes anyway.

    Only the read-model queries and their read-your-writes wait use it: the tracking
    table is replicated, so waiting for a position on the replica waits for its replay
    of the projection worker's commit. Writes, the event store, leases, locks and the
    access check never do."""
    if not settings.read_database_url:
        return None
    url = make_url(settings.read_database_url).set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        connect_args={
            "application_name": REPLICA_APPLICATION_NAME,
            "options": _options(url, "-c default_transaction_read_only=on"),
        },
    )


def make_read_only_engine(settings: StoreSettings) -> Engine:
    """An engine that cannot write: PostgreSQL sessions in read-only transactions, the
    SQLite file opened read-only (so a missing file is an error, never created)."""
    if settings.backend == "sqlite":
        path = Path(settings.eventsourcing_env()["SQLITE_DBNAME"])
        return create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
            ),
        )
    url = make_url(settings.database_url).set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        pool_size=1,
        max_overflow=1,
        connect_args={"options": _options(url, "-c default_transaction_read_only=on")},
    )


def _options(url: URL, *more: str) -> str:
    """libpq ``options`` for a session on ``url`` (``registry.persistence.sessions``)."""
    given = url.query.get("options")
    return session_options(given if isinstance(given, str) else None, *more)


def dedicated_connection(engine: Engine) -> psycopg.Connection[Any]:
    """A connection of its own to a PostgreSQL engine's database, outside its pool and
    in autocommit: for a session that waits (LISTEN) rather than a query."""
    url = engine.url.set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

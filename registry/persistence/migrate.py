"""Schema migrations: Alembic (``migrations/``) owns every table, index and type we use.

The event store is told not to create its tables (``CREATE_TABLE=n``), so a database
must be migrated before a Registry starts on it. PostgreSQL is migrated by an operator
(``registry migrate``) and start-up refuses an un-migrated database; the embedded,
single-user SQLite store migrates itself when the registry starts.

Concurrent upgrades are safe: each runs in one transaction that first takes the same
PostgreSQL advisory lock as start-up (SQLite: ``BEGIN IMMEDIATE``), then reads the
current revision, so the second waits for the first and finds nothing left to do. A
server starting meanwhile waits for the migration rather than failing half-way.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

# Before Alembic's first import, which logs its plugin set-up (at INFO, into whatever
# logging a server configured already).
from registry.persistence.migrate_logging import quiet_alembic

# isort: split
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, MetaData, event

from registry.integrity import ledger
from registry.persistence.engine import make_engine
from registry.readmodels import tables as readmodel_tables
from registry.settings import ConfigurationError, Settings

MIGRATIONS_PACKAGE = "migrations"
MIGRATE_COMMAND = "registry migrate"

EVENT_STORE_TABLES = frozenset(
    {"registry_events", "registry_snapshots", "stored_events", "stored_snapshots"}
)
"""The library's tables: migrated, but not in the read-model metadata autogenerate
compares against, so it must not propose dropping them."""


_alembic_lock = threading.Lock()
"""Alembic's ``context`` and ``op`` are module-global proxies: one command at a time."""


class NotMigrated(ConfigurationError):
    """The database's schema is behind this version of the registry."""

    reason = "DATABASE_NOT_MIGRATED"


def schema_metadata() -> MetaData:
    """Every table the migrations own: the read models and the ledger's digest chain,
    in one MetaData, which is what autogenerate and the schema test compare against."""
    combined = MetaData()
    for source in (readmodel_tables.metadata, ledger.metadata):
        for table in source.tables.values():
            table.to_metadata(combined)
    return combined


def migrations_dir() -> Path:
    """Where the migration scripts are: the ``migrations`` package, found by import so
    that a non-editable install works from any working directory."""
    spec = importlib.util.find_spec(MIGRATIONS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"the {MIGRATIONS_PACKAGE!r} package is missing: reinstall carbon-registry"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(settings: Settings) -> Config:
    """An Alembic Config built in code (no alembic.ini) for the given database."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    config.attributes["settings"] = settings
    return config


@lru_cache(maxsize=4)
def _heads(script_location: Path) -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(script_location).replace("%", "%%"))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def head_revision() -> str:
    """The newest revision this version of the registry knows."""
    return ", ".join(sorted(_heads(migrations_dir())))


def migration_engine(settings: Settings) -> Engine:
    """The registry's engine, made so that an SQLite upgrade is one ``BEGIN IMMEDIATE``
    transaction: pysqlite would otherwise run each DDL statement outside any transaction
    and let two processes both find the database empty."""
    _require_database(settings)
    engine = make_engine(settings)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _manual_transactions(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate filter: leave the event store's tables (and their indexes) alone."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return getattr(table, "name", name) not in EVENT_STORE_TABLES


def current_revision(settings: Settings) -> str | None:
    """The database's revision, or None for a database never migrated."""
    with _connection(settings) as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return ", ".join(sorted(heads)) or None


def is_at_head(settings: Settings) -> bool:
    with _connection(settings) as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    return frozenset(heads) == _heads(migrations_dir())


def ensure_migrated(settings: Settings) -> None:
    """Raise NotMigrated, naming the command to run, unless the database is at head."""
    if is_at_head(settings):
        return
    current = current_revision(settings)
    head = head_revision()
    if current is not None and not _known(current):
        raise ConfigurationError(
            f"database {settings.describe()} is at revision {current}, which this version "
            f"of the registry does not know (its head is {head}): upgrade the registry"
        )
    raise NotMigrated(
        f"database {settings.describe()} is not migrated (at revision "
        f"{current or 'none'}, head is {head}): run `{MIGRATE_COMMAND}` with "
        "REGISTRY_DATABASE_URL set to it"
    )


def upgrade(settings: Settings, revision: str = "head") -> list[str]:
    """Upgrade the database to ``revision``; return the steps this call applied (none
    when it was already there, or another process got there first)."""
    _require_database(settings)
    if revision == "head" and is_at_head(settings):
        return []
    current = current_revision(settings)
    if current is not None and not _known(current):
        raise ConfigurationError(
            f"database {settings.describe()} is at revision {current}, which this version "
            f"of the registry does not know (its head is {head_revision()})"
        )
    with _steps(settings) as (config, steps):
        command.upgrade(config, revision)
    return steps


def downgrade(settings: Settings, revision: str = "base") -> list[str]:
    """Downgrade to ``revision``. To base, this drops every table, events included."""
    _require_database(settings)
    with _steps(settings) as (config, steps):
        command.downgrade(config, revision)
    return steps


@contextmanager
def _steps(settings: Settings) -> Iterator[tuple[Config, list[str]]]:
    config = alembic_config(settings)
    steps: list[str] = []

    def record(*, step: MigrationInfo, **_: Any) -> None:
        source = ", ".join(step.source_revision_ids) or "base"
        target = ", ".join(step.destination_revision_ids) or "base"
        title = str(getattr(step.up_revision, "doc", "") or "").strip().partition("\n")[0]
        steps.append(f"{source} -> {target}: {title}" if title else f"{source} -> {target}")

    config.attributes["on_version_apply"] = record
    quiet_alembic()  # idempotent: the filters stay even if something reset the loggers
    with _alembic_lock:
        try:
            yield config, steps
        except CommandError as error:
            raise ConfigurationError(f"migrating {settings.describe()}: {error}") from error


def _known(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config(Settings("memory:")))
    try:
        return all(script.get_revision(r) is not None for r in revision.split(", "))
    except CommandError:
        return False


def _require_database(settings: Settings) -> None:
    if settings.backend not in ("sqlite", "postgresql", "postgres"):
        settings.eventsourcing_env()  # names what is wrong with an unsupported URL
        raise ConfigurationError(
            f"{settings.describe()} keeps everything in one process: nothing to migrate"
        )


def create_sqlite_file(settings: Settings) -> None:
    """Create the embedded store's file readable and writable by its owner only (0600,
    like the credentials and the signing key beside it): it holds every event and the
    token hashes. SQLite gives its -wal and -shm files the same mode. An existing file
    is left as it is (its mode is the operator's choice)."""
    if settings.backend != "sqlite":
        return
    path = Path(settings.eventsourcing_env()["SQLITE_DBNAME"])
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@contextmanager
def _connection(settings: Settings) -> Iterator[Connection]:
    _require_database(settings)
    create_sqlite_file(settings)  # before SQLite makes it with the umask's 0644
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()

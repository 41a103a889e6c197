"""Settings, and the composition root that builds a Registry on the chosen store.

One setting picks the store, ``REGISTRY_DATABASE_URL``:

- unset: an embedded SQLite file, ``$REGISTRY_DATA_DIR/registry.sqlite``
  (``REGISTRY_DATA_DIR`` defaults to ``./registry-data``; created on first use);
- ``sqlite:///relative/path.sqlite`` or ``sqlite:////absolute/path.sqlite``;
- ``postgresql://user:password@host:port/dbname`` (password and port optional);
- ``memory:`` keeps everything in this process only (tests, throwaway runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from registry.application.registry import Registry
from registry.domain.errors import InvalidCommand
from registry.persistence.locks import STARTUP_LOCK_KEY

DEFAULT_DATA_DIR = "registry-data"


class ConfigurationError(InvalidCommand):
    reason = "INVALID_CONFIGURATION"


@dataclass(frozen=True)
class Settings:
    database_url: str
    cache_size: int = 20_000
    pool_size: int = 8
    statement_timeout: float = 30.0
    """Seconds a statement of a write transaction may run before PostgreSQL cancels it
    and the event table's lock is released (``REGISTRY_DB_STATEMENT_TIMEOUT``)."""
    idle_in_transaction_timeout: float = 5.0
    """Seconds a write connection may sit idle inside a transaction before PostgreSQL
    ends its session (``REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        url = environ.get("REGISTRY_DATABASE_URL", "").strip()
        if not url:
            data_dir = Path(environ.get("REGISTRY_DATA_DIR", DEFAULT_DATA_DIR))
            url = f"sqlite:///{data_dir / 'registry.sqlite'}"
        return cls(
            database_url=url,
            cache_size=_int(environ, "REGISTRY_CACHE_SIZE", cls.cache_size),
            pool_size=_int(environ, "REGISTRY_POOL_SIZE", cls.pool_size),
            statement_timeout=_seconds(
                environ, "REGISTRY_DB_STATEMENT_TIMEOUT", cls.statement_timeout
            ),
            idle_in_transaction_timeout=_seconds(
                environ, "REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT", cls.idle_in_transaction_timeout
            ),
        )

    @property
    def backend(self) -> str:
        return urlsplit(self.database_url).scheme.split("+")[0] or "memory"

    def describe(self) -> str:
        """The store, with any password masked (``registry.configuration.mask_url``)."""
        from registry.configuration import mask_url  # here: configuration imports this

        return mask_url(self.database_url)

    def eventsourcing_env(self) -> dict[str, str]:
        """Translate our one setting into the event store library's environment.

        The library never creates tables (``CREATE_TABLE=n``): Alembic migrations own
        all DDL (``registry.persistence.migrate``)."""
        env = {"AGGREGATE_CACHE_MAXSIZE": str(self.cache_size)}
        parts = urlsplit(self.database_url)
        if self.backend == "memory":
            env["PERSISTENCE_MODULE"] = "eventsourcing.popo"
        elif self.backend == "sqlite":
            path = Path(unquote(parts.path[1:] if parts.path.startswith("/") else parts.path))
            if not path.name:
                raise ConfigurationError(f"no file in {self.database_url!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            env.update(
                PERSISTENCE_MODULE="eventsourcing.sqlite",
                SQLITE_DBNAME=str(path),
                SQLITE_LOCK_TIMEOUT="30",
                CREATE_TABLE="n",
                # The library's recorder, storing each event's authenticator.
                APPLICATION_RECORDER_TOPIC="registry.persistence.recorder:RegistrySQLiteRecorder",
            )
        elif self.backend in ("postgresql", "postgres"):
            dbname = unquote(parts.path.lstrip("/"))
            if not dbname:
                raise ConfigurationError(f"no database name in {self.describe()!r}")
            env.update(
                PERSISTENCE_MODULE="eventsourcing.postgres",
                POSTGRES_DBNAME=dbname,
                POSTGRES_HOST=parts.hostname or "127.0.0.1",
                POSTGRES_PORT=str(parts.port or 5432),
                POSTGRES_USER=unquote(parts.username or os.environ.get("USER", "postgres")),
                POSTGRES_PASSWORD=unquote(parts.password or ""),
                POSTGRES_POOL_SIZE=str(self.pool_size),
                POSTGRES_MAX_OVERFLOW=str(self.pool_size),
                POSTGRES_CONNECT_TIMEOUT="10",
                POSTGRES_LOCK_TIMEOUT="10",
                POSTGRES_STATEMENT_TIMEOUT=str(self.statement_timeout),
                # Whole seconds: the library's setting is an integer.
                POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT=str(
                    max(1, round(self.idle_in_transaction_timeout))
                ),
                CREATE_TABLE="n",
                # Same writes as the library's recorder, one cheaper insert statement.
                APPLICATION_RECORDER_TOPIC="registry.persistence.recorder:RegistryPostgresRecorder",
            )
        else:
            raise ConfigurationError(
                f"unsupported database URL {self.describe()!r}: use sqlite:///FILE, "
                "postgresql://USER@HOST:PORT/DB or memory:"
            )
        return env


def data_file(setting: str, default_name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The file a setting names, else ``default_name`` in ``REGISTRY_DATA_DIR``: where
    the embedded registry keeps its keys and published checkpoints with no set-up."""
    environ = os.environ if environ is None else environ
    given = environ.get(setting, "").strip()
    if given:
        return Path(given)
    return Path(environ.get("REGISTRY_DATA_DIR", "") or DEFAULT_DATA_DIR) / default_name


def _int(environ: Mapping[str, str], key: str, default: int) -> int:
    value = environ.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigurationError(f"{key} must be at least 1, got {number}")
    return number


def _seconds(environ: Mapping[str, str], key: str, default: float) -> float:
    """A positive number of seconds, at most an hour: a write that waits longer is stuck."""
    value = environ.get(key)
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}") from None
    if not 1 <= seconds <= 3600:
        raise ConfigurationError(f"{key} must be 1..3600 seconds, got {value!r}")
    return seconds


def build_registry(
    settings: Settings | None = None, clock: Callable[[], datetime] | None = None
) -> Registry:
    """The composition root: a Registry on the configured store, national accounts open.

    The schema must be at head first. PostgreSQL is migrated by an operator, so an
    un-migrated database is refused with the command to run; the embedded SQLite store
    (one user, no operator) migrates itself; memory has no schema."""
    settings = settings or Settings.from_env()
    env = settings.eventsourcing_env()
    with _startup_lock(env):
        if settings.backend != "memory":
            from registry.persistence import migrate  # here: migrate imports this module

            if settings.backend == "sqlite":
                migrate.upgrade(settings)
            else:
                migrate.ensure_migrated(settings)
        registry = Registry(env=env, clock=clock)
        registry.ensure_national_accounts()
    return registry


@contextmanager
def _startup_lock(env: Mapping[str, str]) -> Iterator[None]:
    """Serialise start-up on PostgreSQL: several servers or workers starting at the same
    moment open the national accounts once, and none starts during a migration."""
    if env.get("PERSISTENCE_MODULE") != "eventsourcing.postgres":
        yield
        return
    import psycopg

    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (STARTUP_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (STARTUP_LOCK_KEY,))

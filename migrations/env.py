"""Alembic environment, configured in code: ``registry.persistence.migrate`` builds the Config.

The database comes from ``registry.settings.Settings`` (``config.attributes["settings"]``,
else the environment, so a developer's ``alembic`` command with the repo's alembic.ini
works too) and the engine from ``registry.persistence.migrate.migration_engine``. Each upgrade is
one transaction that first takes the registry's advisory lock on PostgreSQL (SQLite:
``BEGIN IMMEDIATE``), so concurrent upgrades queue up instead of colliding.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from registry.persistence.engine import make_engine
from registry.persistence.locks import MIGRATION_LOCK_KEY
from registry.persistence.migrate import include_object, migration_engine, schema_metadata
from registry.settings import Settings

config = context.config
target_metadata = schema_metadata()


def settings() -> Settings:
    given = config.attributes.get("settings")
    return given if isinstance(given, Settings) else Settings.from_env()


def run_migrations() -> None:
    with context.begin_transaction():
        if context.get_context().dialect.name == "postgresql":
            context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


def run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        # SQLite DDL is transactional too: one transaction per upgrade, all or nothing.
        transactional_ddl=True,
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    run_migrations()


def run_offline() -> None:
    """``alembic upgrade head --sql``: the script a DBA can review and run by hand."""
    engine = make_engine(settings())
    url = engine.url
    engine.dispose()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        transactional_ddl=True,
        include_object=include_object,
    )
    run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_online(given)
else:
    engine = migration_engine(settings())
    try:
        with engine.connect() as connection:
            run_online(connection)
    finally:
        engine.dispose()

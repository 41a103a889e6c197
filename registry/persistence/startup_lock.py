"""The PostgreSQL advisory lock that serialises start-up and migrations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from registry.persistence.locks import STARTUP_LOCK_KEY


@contextmanager
def startup_lock(env: Mapping[str, str]) -> Iterator[None]:
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

"""The PostgreSQL advisory lock that serialises start-up and migrations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

STARTUP_LOCK_KEY = 0x7265_6769_7374_7279  # "registry"
"""PostgreSQL advisory lock held while a process checks the schema and opens national
accounts, and by every migration (so a start never overlaps one)."""


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

"""The PostgreSQL advisory lock that serialises start-up and migrations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from registry.persistence.locks import STARTUP_LOCK_KEY


@contextmanager
def startup_lock(env: Mapping[str, str]) -> Iterator[None]:
    """Serialise start-up on PostgreSQL: several servers or workers starting at the same
    moment open the national accounts once, and none starts during a migration."""
    if "POSTGRES_DBNAME" not in env:
        yield
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    from registry.persistence.pgstore import tls_connect_kwargs

    conninfo = make_conninfo(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        # The URL's sslmode, sslrootcert...: as the event store's pool connects.
        **tls_connect_kwargs(env),
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (STARTUP_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (STARTUP_LOCK_KEY,))

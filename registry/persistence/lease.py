"""The projection lease: one worker at a time applies the projections (and seals the
ledger and does the housekeeping); the others stand by and take over when it dies.

A PostgreSQL session advisory lock on a dedicated connection: the database releases it
the moment the holder's session ends, however the process died, so no lease can be
stranded and no timeout has to be guessed. A holder that loses its connection (the
database restarted) stops applying until it holds the lock again. Correctness does not
rest on the lease alone: each batch also locks the projections' tracking rows, so even
two appliers could never apply one event twice; the lease keeps a second worker from
contending for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine, text

from registry.persistence.locks import LEASE_LOCK_KEY


@contextmanager
def projection_lease(
    engine: Engine,
    stop: threading.Event,
    *,
    wait_seconds: float = 1.0,
    on_wait: Callable[[], None] = lambda: None,
    on_attempt: Callable[[], None] = lambda: None,
) -> Iterator[threading.Event | None]:
    """Hold the lease until the block ends; yields the event that says to let it go:
    set when ``stop`` is, or when the lease is lost (None when ``stop`` was set before
    it was won). SQLite has one writer process: the lease is always held there."""
    if engine.dialect.name != "postgresql":
        yield stop
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        waiting = False
        while not _try_lock(conn):
            on_attempt()  # a standby's liveness: it asked the database just now
            if stop.is_set():
                yield None
                return
            if not waiting:
                on_wait()
                waiting = True
            stop.wait(wait_seconds)
        release = threading.Event()
        watch = threading.Thread(
            target=_watch, args=(conn, stop, release), daemon=True, name="projection-lease"
        )
        watch.start()
        try:
            yield release
        finally:
            release.set()
            watch.join(timeout=5)
            with suppress(Exception):  # a lost connection took the lock with it
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LEASE_LOCK_KEY})


def lease_holder(engine: Engine) -> int | None:
    """The backend pid of the session holding this database's lease, if any
    (PostgreSQL). Advisory locks are per database but ``pg_locks`` shows the whole
    server's: another registry's worker on the same server holds the same key."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database"
                "                 WHERE datname = current_database())"
                " AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"key": LEASE_LOCK_KEY},
        ).scalar()


def _try_lock(conn: Connection) -> bool:
    return bool(
        conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEASE_LOCK_KEY}).scalar()
    )


def _watch(
    conn: Connection,
    stop: threading.Event,
    release: threading.Event,
    every: float = 2.0,
    tick: float = 0.2,
) -> None:
    """Set ``release`` once ``stop`` is set or the lease's connection stops answering
    (asked every ``every`` seconds)."""
    waited = 0.0
    while not (stop.wait(tick) or release.is_set()):
        waited += tick
        if waited < every:
            continue
        waited = 0.0
        try:
            conn.execute(text("SELECT 1"))
        except Exception:
            break
    release.set()

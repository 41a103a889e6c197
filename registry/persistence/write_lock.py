"""Group commits of several processes: shared while they do not collide, one at a time
when they do.

Several server processes each run a group commit. When their groups touch the same
account (every surrender credits CN-SURRENDER), they lose races to each other. Every
attempt of a group first brings the process's cached aggregates up to date with what
the others wrote (``PostgresAggregates.catch_up`` in ``registry/persistence/aggregates.py``),
and attempts hold a PostgreSQL advisory lock on one key:

- a first attempt holds it *shared* while other processes have lately written:
  groups of different processes run side by side (holding it exclusively for every
  group made the processes take turns and halved the 32-caller single-trade rate); a
  process that has seen no other writer for a while takes no lock at all (its two
  round trips were a third of a single trade's time);
- a retry holds it *exclusively*, and so does a first attempt while its process has
  lately lost races (``Registry``'s contention window): it cannot lose to another
  group, and PostgreSQL queues later shared requests behind it, so a retry is never
  starved (with retries alone exclusive, a retry kept losing to the other process's
  unlocked first attempts, and a few groups gave up after 12 attempts).

Commands outside the group commit do not take it; the version-checked save guards
them all. The lock is a session lock on a pooled connection: if the process dies,
PostgreSQL releases it. Because it only orders writers (it guards nothing), a wait for
it is bounded (``LOCK_WAIT``): a holder that is stopped (SIGSTOP, a frozen VM) but not
dead would otherwise stall every other process's writes; after the wait a group goes
ahead unlocked, as a process writing alone does. A connection that died under the lock
took the lock with it: unlocking it is then skipped, not an error that would turn a
committed group into a failed call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore

from registry.persistence.locks import WRITER_LOCK_KEY

log = logging.getLogger("registry.write_lock")

LOCK_WAIT = "5s"
"""How long a group waits for the writer lock before it goes ahead without it (a
PostgreSQL interval). A healthy holder keeps it for one group's decision and save
(milliseconds; a second for the largest batches)."""


def writer_lock(recorder: Any, *, exclusive: bool) -> AbstractContextManager[None]:
    """A context holding the cross-process writer lock, shared or exclusive, where the
    store has one."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, PostgresDatastore):
        return _advisory_lock(datastore, exclusive)
    return nullcontext()  # SQLite and memory stores live in one process


def exclusive_writer(recorder: Any) -> AbstractContextManager[None]:
    return writer_lock(recorder, exclusive=True)


_held = threading.local()


@contextmanager
def _advisory_lock(datastore: PostgresDatastore, exclusive: bool) -> Iterator[None]:
    """Re-entrant within a thread, in whatever mode the thread holds it: a command
    started while deciding a group (a hook calling back in) runs under that lock;
    taking it again from another connection could wait for itself."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    mode = "" if exclusive else "_shared"
    with datastore.get_connection() as conn:
        locked = _lock(conn, mode)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            if locked:
                _unlock(conn, mode)


def _lock(conn: psycopg.Connection[Any], mode: str) -> bool:
    """Take the lock, waiting ``LOCK_WAIT`` at most; False when it was not free."""
    try:
        # lock_timeout for this one statement only (is_local: its own transaction).
        conn.execute(
            f"SELECT set_config('lock_timeout', %s, true), pg_advisory_lock{mode}(%s)",
            (LOCK_WAIT, WRITER_LOCK_KEY),
        )
    except psycopg.errors.LockNotAvailable:
        log.warning(
            "the writer lock was not free within %s (a stopped process may hold "
            "it); going ahead without it",
            LOCK_WAIT,
        )
        return False
    return True


def _unlock(conn: psycopg.Connection[Any], mode: str) -> None:
    """Let the lock go; a connection that died already let it go with its session."""
    try:
        conn.execute(f"SELECT pg_advisory_unlock{mode}(%s)", (WRITER_LOCK_KEY,))
    except (psycopg.OperationalError, psycopg.InterfaceError):
        if not (conn.closed or conn.broken):
            raise


def drop_dead_connections(recorder: Any) -> None:
    """After a lost connection, test the pool's idle connections and replace the dead:
    a restart kills them all, and each would otherwise fail one more attempt."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, PostgresDatastore):
        with suppress(psycopg.Error):  # still down: the next attempt says so
            datastore.pool.check()

"""One writer at a time across processes, for retries of group commits.

Several server processes each run a group commit. When their groups touch the same
account (every surrender credits CN-SURRENDER), they lose races to each other, and a
group that lost retries against a store the other keeps changing: with two processes,
the national year's surrenders took twice as long and a few gave up. Every attempt of a
group first brings the process's cached aggregates up to date with what the others
wrote (``Registry._catch_up_cache``), and every retry holds a PostgreSQL advisory lock,
so it cannot lose to another process's retry. (Holding it for first attempts too made
the processes take turns: no lost races, but half the single-trade rate.) Commands
outside the group commit do not take it; the version-checked save guards them all.
The lock is a session lock on a pooled connection: if the process dies, PostgreSQL
releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from eventsourcing.postgres import PostgresDatastore

ADVISORY_KEY = 0x5245_4749_5354_5259   # "REGISTRY": one key for the registry's writers
"""The advisory lock's key (a bigint); only group-commit retries take it."""


def exclusive_writer(recorder: Any) -> AbstractContextManager[None]:
    """A context holding the cross-process writer lock, where the store has one."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, PostgresDatastore):
        return _advisory_lock(datastore)
    return nullcontext()   # SQLite and memory stores live in one process


_held = threading.local()


@contextmanager
def _advisory_lock(datastore: PostgresDatastore) -> Iterator[None]:
    """Re-entrant within a thread: a command started while deciding a group (a hook
    calling back in) runs under the lock its thread already holds; taking it again
    from another connection would wait for itself."""
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    with datastore.get_connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))

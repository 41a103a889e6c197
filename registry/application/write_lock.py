"""Group commits of several processes: shared while they do not collide, one at a time
when they do.

Several server processes each run a group commit. When their groups touch the same
account (every surrender credits CN-SURRENDER), they lose races to each other. Every
attempt of a group first brings the process's cached aggregates up to date with what
the others wrote (``Registry._catch_up_cache``), and attempts hold a PostgreSQL advisory
lock on one key:

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
PostgreSQL releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from eventsourcing.postgres import PostgresDatastore

ADVISORY_KEY = 0x5245_4749_5354_5259   # "REGISTRY": one key for the registry's writers
"""The advisory lock's key (a bigint); only group commits take it."""


def writer_lock(recorder: Any, *, exclusive: bool) -> AbstractContextManager[None]:
    """A context holding the cross-process writer lock, shared or exclusive, where the
    store has one."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, PostgresDatastore):
        return _advisory_lock(datastore, exclusive)
    return nullcontext()   # SQLite and memory stores live in one process


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
        conn.execute(f"SELECT pg_advisory_lock{mode}(%s)", (ADVISORY_KEY,))
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            conn.execute(f"SELECT pg_advisory_unlock{mode}(%s)", (ADVISORY_KEY,))

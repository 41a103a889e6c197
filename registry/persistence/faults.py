"""Which database errors a retry can cure, in one place.

A PostgreSQL failover or restart ends every session: each pooled connection then fails
its next use once (``AdminShutdown``, "server closed the connection", "the connection
is closed"), and new connections are refused for a few seconds. A lock or statement
timeout, a pool with no free connection in time, a serialization failure or a deadlock
are cured the same way: by asking again a moment later. None of them is a registry
defect, so none may leave the API as ``INTERNAL`` (which tells an exchange "do not
retry") or stop a long-running process.

The errors arrive wrapped differently depending on the path: psycopg's own, the event
store library's (``eventsourcing.persistence.OperationalError`` raised ``from`` the
psycopg error), SQLAlchemy's ``DBAPIError`` around the psycopg error, or sqlite3's
"database is locked". ``database_fault`` looks through the chain and names the fault.
"""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg.errors
import psycopg_pool
from eventsourcing import persistence
from sqlalchemy.exc import DBAPIError

CONNECTION_LOST = "DATABASE_CONNECTION_LOST"
"""The connection was dropped or could not be made (restart, failover, network)."""

DATABASE_BUSY = "DATABASE_BUSY"
"""A lock or statement timeout, no pooled connection in time, a serialization failure
or a deadlock: the database is up but the work could not be done now."""

_BUSY = (
    psycopg_pool.PoolTimeout,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.TooManyConnections,
)
"""Checked before the connection-loss classes: most of them are OperationalErrors too."""

_LOST = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.IdleInTransactionSessionTimeout,
)
"""Whatever else psycopg raises as operational: the connection is gone or unreachable
(an idle-in-transaction timeout ended the session too)."""


def database_fault(error: BaseException | None) -> str | None:
    """``CONNECTION_LOST`` or ``DATABASE_BUSY`` when a retry can cure ``error``, else
    None (a defect: a bad statement, a constraint, a bug)."""
    seen = 0
    while error is not None and seen < 8:  # a chain is short; never loop on a cycle
        seen += 1
        if isinstance(error, _BUSY):
            return DATABASE_BUSY
        if isinstance(error, _LOST):
            return CONNECTION_LOST
        if isinstance(error, DBAPIError):
            if error.connection_invalidated:
                return CONNECTION_LOST
            error = error.orig
            continue
        if isinstance(error, sqlite3.OperationalError):
            text = str(error).lower()
            return DATABASE_BUSY if "locked" in text or "busy" in text else None
        if isinstance(error, persistence.OperationalError | persistence.InterfaceError):
            cause = error.__cause__
            if cause is None:
                return CONNECTION_LOST  # the library's own "connection" errors
            error = cause
            continue
        error = error.__cause__
    return None


def describe_fault(error: BaseException) -> str:
    """The database's own words, on one line (psycopg's messages span several)."""
    cause: BaseException = error
    while (
        isinstance(cause, DBAPIError | persistence.PersistenceError) and cause.__cause__ is not None
    ):
        cause = cause.__cause__
    if isinstance(cause, DBAPIError) and cause.orig is not None:
        cause = cause.orig
    text = " ".join(str(cause).split())
    return text[:300] or type(cause).__name__

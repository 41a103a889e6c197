"""Which errors a retry can cure (``registry.persistence.faults``): the classifier behind every
retryable status, the worker's recovery and the CLI's exit 3. Errors as each layer
raises them; the PostgreSQL paths are exercised for real in
tests/integration/test_database_faults.py and tests/e2e/test_connection_loss.py."""

from __future__ import annotations

import sqlite3

import psycopg
import psycopg_pool
import pytest
from eventsourcing import persistence
from sqlalchemy.exc import OperationalError as SAOperationalError

from registry.persistence.faults import (
    CONNECTION_LOST,
    DATABASE_BUSY,
    database_fault,
    describe_fault,
)


def wrapped(error: BaseException) -> persistence.OperationalError:
    """As the event store's datastore raises it: ``raise ... from`` the driver's."""
    outer = persistence.OperationalError(str(error))
    outer.__cause__ = error
    return outer


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (psycopg.errors.AdminShutdown("terminating connection"), CONNECTION_LOST),
        (psycopg.OperationalError("server closed the connection unexpectedly"), CONNECTION_LOST),
        (psycopg.InterfaceError("the connection is closed"), CONNECTION_LOST),
        (wrapped(psycopg.errors.AdminShutdown("terminating")), CONNECTION_LOST),
        (persistence.InterfaceError("connection lost"), CONNECTION_LOST),
        (SAOperationalError("SELECT 1", {}, psycopg.OperationalError("refused")), CONNECTION_LOST),
        (wrapped(psycopg.errors.LockNotAvailable("lock timeout")), DATABASE_BUSY),
        (wrapped(psycopg.errors.QueryCanceled("statement timeout")), DATABASE_BUSY),
        (psycopg_pool.PoolTimeout("no connection in 10 s"), DATABASE_BUSY),
        (wrapped(psycopg.errors.DeadlockDetected("deadlock")), DATABASE_BUSY),
        (wrapped(sqlite3.OperationalError("database is locked")), DATABASE_BUSY),
        (wrapped(sqlite3.OperationalError("no such table: stored_events")), None),
        (wrapped(psycopg.errors.IdleInTransactionSessionTimeout("idle")), CONNECTION_LOST),
        (persistence.IntegrityError("duplicate key"), None),
        (wrapped(psycopg.errors.UndefinedTable("no such table")), None),
        (ValueError("a bug"), None),
    ],
)
def test_what_a_retry_can_cure(error: BaseException, fault: str | None) -> None:
    assert database_fault(error) == fault


def test_a_fault_is_described_on_one_line_in_the_databases_words() -> None:
    error = wrapped(
        psycopg.OperationalError(
            "consuming input failed: server closed\n\tthe connection unexpectedly"
        )
    )
    assert describe_fault(error) == (
        "consuming input failed: server closed the connection unexpectedly"
    )

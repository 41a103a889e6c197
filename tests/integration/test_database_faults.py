"""Database faults on the write path are survived, or answered as retryable, never as
a registry defect.

Reproduces issue 15 item 8: after every connection to the database was terminated (what
a PostgreSQL failover or restart does), ``SettleTrades``, ``CancelUnits`` and
``PlaceHold`` raised the event store's ``OperationalError`` from the dead pooled
connections (the gRPC layer answered INTERNAL); a lock timeout was retried twelve times
(~100 s with the configured 10 s) and then answered INTERNAL too; and a writer-lock
holder that was stopped, not dead, stalled every other process's group commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from google.rpc import error_details_pb2, status_pb2

from registry.application import Registry, Trade, TradeOutcome
from registry.bootstrap import build_registry
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence import write_lock
from registry.persistence.faults import CONNECTION_LOST, DATABASE_BUSY, database_fault
from registry.persistence.locks import WRITER_LOCK_KEY
from registry.settings import Settings
from services.errors import to_status
from tests.support import (
    EXCHANGE,
    REGULATOR,
    assert_conserved,
    fresh_pg_database,
    open_company,
    terminate_all,
)

pytestmark = pytest.mark.postgres

CEA25 = UnitClass(UnitType.CEA, 2025)
CEA = UnitSelector(UnitType.CEA)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with fresh_pg_database() as database:
        yield database


@pytest.fixture()
def registry(url: str) -> Iterator[Registry]:
    registry = build_registry(Settings(url))
    try:
        yield registry
    finally:
        registry.close()


def reason_of(status: grpc.Status) -> str:
    """The ErrorInfo reason of a rich status, as a client decodes it."""
    [details] = [
        value for key, value in status.trailing_metadata if key == "grpc-status-details-bin"
    ]
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(details).details[0].Unpack(info)
    return info.reason


def fund(registry: Registry, prefix: str, each: int = 1000) -> tuple[str, str]:
    seller, buyer = f"{prefix}-S", f"{prefix}-B"
    for account in (seller, buyer):
        open_company(registry, account)
    registry.issue_units(REGULATOR, f"{prefix}-ISS", CEA25, each, "issuance")
    registry.transfer(
        REGULATOR, f"{prefix}-RES", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", CEA, each, "reserve"
    )
    registry.allocate(REGULATOR, f"{prefix}-AL", seller, CEA, each, "allocation")
    return seller, buyer


def warm_pool(registry: Registry, seller: str) -> None:
    """Open several pooled connections (each thread's read takes one), so a restart
    leaves several dead ones behind, as on a busy server."""
    threads = [threading.Thread(target=registry.get_holdings, args=(seller,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_writes_go_through_after_every_connection_was_terminated(
    url: str, registry: Registry
) -> None:
    seller, buyer = fund(registry, "TERM")
    warm_pool(registry, seller)
    assert terminate_all(url) >= 1

    [settled] = registry.settle_trades(EXCHANGE, [Trade("T-1", seller, buyer, "CEA", 10)])
    assert settled.outcome is TradeOutcome.SETTLED, settled
    terminate_all(url)
    hold = registry.place_hold(EXCHANGE, "H-1", seller, CEA, 5, 600)
    assert hold.status.value == "ACTIVE"
    terminate_all(url)
    cancelled = registry.cancel(REGULATOR, "C-1", buyer, CEA, 3, "voluntary")
    assert cancelled.status.value == "COMPLETED"

    # Nothing lost or doubled: a retry is a replay, and the balances add up.
    [again] = registry.settle_trades(EXCHANGE, [Trade("T-1", seller, buyer, "CEA", 10)])
    assert again.outcome is TradeOutcome.ALREADY_SETTLED
    buyer_total = sum(h.total for h in registry.get_holdings(buyer))
    seller_total = sum(h.total for h in registry.get_holdings(seller))
    assert (seller_total, buyer_total) == (990, 7)
    assert_conserved(registry)


def test_a_lock_timeout_is_answered_retryable_at_once(url: str) -> None:
    """Before: the attempt was retried twelve times, each waiting the whole lock
    timeout, and then answered INTERNAL."""
    env = {**Settings(url).eventsourcing_env(), "POSTGRES_LOCK_TIMEOUT": "1"}
    registry = Registry(env=env)
    try:
        seller, buyer = fund(registry, "LOCK")
        table = registry.recorder.events_table_name  # type: ignore[attr-defined]
        with psycopg.connect(url) as blocker:
            blocker.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')  # a stuck writer
            started = time.monotonic()
            with pytest.raises(OperationalError) as raised:
                registry.settle_trades(EXCHANGE, [Trade("L-1", seller, buyer, "CEA", 1)])
            took = time.monotonic() - started
            blocker.rollback()
        assert took < 6, f"{took:.1f}s: a lock timeout must not be retried in the server"
        assert database_fault(raised.value) == DATABASE_BUSY
        status = to_status(raised.value)
        assert status.code is grpc.StatusCode.UNAVAILABLE
        assert reason_of(status) == "DATABASE_BUSY"
        # Nothing of it was applied, and a retry now goes through.
        [settled] = registry.settle_trades(EXCHANGE, [Trade("L-1", seller, buyer, "CEA", 1)])
        assert settled.outcome is TradeOutcome.SETTLED
    finally:
        registry.close()


def test_a_stopped_holder_of_the_writer_lock_does_not_stall_writers(
    url: str, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process stopped (SIGSTOP) while holding the writer lock keeps its session, so
    PostgreSQL never releases the lock. Before: every other group waited for ever."""
    monkeypatch.setattr(write_lock, "LOCK_WAIT", "300ms")
    entered = threading.Event()

    def group() -> None:
        with write_lock.writer_lock(registry.recorder, exclusive=True):
            entered.set()

    with psycopg.connect(url, autocommit=True) as stopped:
        stopped.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK_KEY,))
        thread = threading.Thread(target=group, daemon=True)
        thread.start()
        assert entered.wait(10), "the writer lock's wait is not bounded"
        thread.join(10)


def test_a_connection_lost_under_the_writer_lock_does_not_fail_the_group(
    url: str, registry: Registry
) -> None:
    """The session took the lock with it; unlocking must not turn a group that
    committed into an error. Before: OperationalError from the unlock."""
    with write_lock.writer_lock(registry.recorder, exclusive=True):
        assert terminate_all(url) >= 1


def test_every_database_fault_maps_to_a_retryable_status(url: str) -> None:
    """The read path (SQLAlchemy), the event store's path and psycopg's own errors."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            terminate_all(url)
            with pytest.raises(Exception) as lost:
                conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert database_fault(lost.value) == CONNECTION_LOST
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(url.replace("127.0.0.1:5432", "127.0.0.1:9"), connect_timeout=2)
    wrapped = OperationalError(str(refused.value))
    wrapped.__cause__ = refused.value
    for error in (lost.value, refused.value, wrapped):
        status = to_status(error)
        assert status.code is grpc.StatusCode.UNAVAILABLE, error
        assert reason_of(status) == CONNECTION_LOST
    assert database_fault(ValueError("a bug")) is None
    assert to_status(ValueError("a bug")).code is grpc.StatusCode.INTERNAL

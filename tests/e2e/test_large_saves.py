"""Large saves on PostgreSQL never wedge the event table, and one call's bytes are bounded.

Issue 15, item 1: a legal ``SettleTrades`` of 10,000 trades with 128-character ids
(about 1.7 MB) and a 12-20 MiB proposal hung the writing connection in psycopg's
pipeline mode, with the event table's EXCLUSIVE lock held, so every later write from
anyone waited until the process was killed. These tests send such saves repeatedly,
each under a watchdog, and check that the next write of another caller gets through.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError, StoredEvent

from registry.application import Registry
from registry.application.commands import MAX_BATCH, MAX_BATCH_BYTES
from registry.bootstrap import build_registry
from registry.domain.proposals import MAX_PAYLOAD_BYTES
from registry.persistence.recorder import PIPELINE_MAX_BYTES, RegistryPostgresRecorder
from registry.settings import Settings
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import settlement_service_pb2 as pb
from tests.e2e.conftest import INVALID, Api, rpc_error, running_api
from tests.e2e.market import TRADER, balance, open_company, seed_market, trade
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres

WATCHDOG_SECONDS = 120.0
"""Far above what any of these saves takes (a few seconds on 2 cores): past it, a save
is stuck, not slow."""


def within_watchdog(work: Callable[[], Any], what: str) -> Any:
    """Run ``work`` on a daemon thread; fail (rather than hang the suite) if it has not
    finished within the watchdog."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the test's thread below
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"watchdog: {what}", daemon=True)
    thread.start()
    thread.join(WATCHDOG_SECONDS)
    assert not thread.is_alive(), f"{what} did not finish in {WATCHDOG_SECONDS:.0f} s: wedged"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture
def pg_registry() -> Iterator[tuple[str, Registry]]:
    with fresh_pg_database() as url:
        registry = build_registry(Settings(url))
        try:
            yield url, registry
        finally:
            registry.close()


def test_saves_of_10_mb_never_wedge_the_event_table(pg_registry: tuple[str, Registry]) -> None:
    """Eight saves of 10,000 events of 1 KB each (10 MB, the size that hung 2 of 6 times
    pipelined in a standalone psycopg script) each finish, and a small save right after
    each gets the table lock at once: nothing is left holding it.

    Before the fix (every save pipelined) one of the eight hung with probability about
    1 - (4/6)^8 = 96%."""
    url, registry = pg_registry
    recorder = registry.recorder
    assert isinstance(recorder, RegistryPostgresRecorder)
    for attempt in range(8):
        events = [
            StoredEvent(
                originator_id=uuid.uuid4(),
                originator_version=1,
                topic="tests.large_saves:Filler",
                state=os.urandom(1000),
            )
            for _ in range(10_000)
        ]
        assert sum(len(e.state) for e in events) > PIPELINE_MAX_BYTES
        ids = within_watchdog(
            lambda events=events: recorder.insert_events(events), f"save {attempt + 1} of 10 MB"
        )
        assert len(ids) == 10_000 and ids == sorted(ids)
        small = [
            StoredEvent(
                originator_id=uuid.uuid4(),
                originator_version=1,
                topic="tests.large_saves:Filler",
                state=b"{}",
            )
        ]
        assert within_watchdog(
            lambda small=small: recorder.insert_events(small), "a small save after it"
        ) == [ids[-1] + 1]
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(host="127.0.0.1", dbname=dbname, user="root", autocommit=True) as conn:
        held = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c "
            "ON c.oid = l.relation WHERE c.relname = 'registry_events' "
            "AND l.mode = 'ExclusiveLock'"
        ).fetchone()
        assert held == (0,)
        count = conn.execute(
            "SELECT count(*) FROM registry_events WHERE topic = 'tests.large_saves:Filler'"
        ).fetchone()
        assert count == (8 * 10_001,)


def test_a_write_transaction_carries_a_statement_timeout(pg_registry: tuple[str, Registry]) -> None:
    """A statement of a write transaction that runs past ``REGISTRY_DB_STATEMENT_TIMEOUT``
    is cancelled and rolls back, so the table lock is released in bounded time. Shown
    by running the recorder's own preamble and a statement slower than the timeout."""
    registry = pg_registry[1]
    recorder = registry.recorder
    assert isinstance(recorder, RegistryPostgresRecorder)
    recorder.set_statement_timeout(1)
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction():
            curs.execute(recorder.prepare_plain_statement)
            curs.execute("SELECT pg_sleep(5)")
        # the transaction rolled back: the lock is free for the next writer
        assert recorder.insert_events(
            [
                StoredEvent(
                    originator_id=uuid.uuid4(),
                    originator_version=1,
                    topic="tests.large_saves:Filler",
                    state=b"{}",
                )
            ]
        )


def test_a_write_connection_idle_in_its_transaction_is_ended() -> None:
    """A writer that stops talking inside its transaction (the lock taken) loses its
    session after ``REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT``, and the lock with it."""
    with fresh_pg_database() as url:
        registry = build_registry(Settings(url, idle_in_transaction_timeout=1))
        try:
            recorder = registry.recorder
            assert isinstance(recorder, RegistryPostgresRecorder)
            with (
                pytest.raises(PersistenceError),
                recorder.datastore.get_connection() as conn,
                conn.cursor() as curs,
                conn.transaction(),
            ):
                curs.execute(recorder.prepare_plain_statement)
                time.sleep(2.5)
                curs.execute("SELECT 1")
            assert recorder.insert_events(
                [
                    StoredEvent(
                        originator_id=uuid.uuid4(),
                        originator_version=1,
                        topic="tests.large_saves:Filler",
                        state=b"{}",
                    )
                ]
            )
        finally:
            registry.close()


def test_the_settings_reach_the_event_store(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "REGISTRY_DATABASE_URL": "postgresql://u@h/db",
            "REGISTRY_DB_STATEMENT_TIMEOUT": "12",
            "REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT": "7",
        }
    )
    env = settings.eventsourcing_env()
    assert (
        env["POSTGRES_STATEMENT_TIMEOUT"],
        env["POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"],
    ) == ("12.0", "7")
    with fresh_pg_database() as url:
        registry = build_registry(Settings(url, statement_timeout=12))
        try:
            assert isinstance(registry.recorder, RegistryPostgresRecorder)
            assert registry.recorder.lock_statements[0] == "SET LOCAL statement_timeout = 12000"
        finally:
            registry.close()


# -- the same through the API ---------------------------------------------------------


@pytest.fixture
def pg_api(tmp_path: Path) -> Iterator[Api]:
    with running_api("postgres", tmp_path) as api:
        yield api


def long_id(prefix: str, n: int) -> str:
    return f"{prefix}-{n:06d}-".ljust(128, "x")


def allocation_table(size: int) -> dict[str, Any]:
    """An ALLOCATION_TABLE payload of exactly ``size`` bytes as stored (compact JSON):
    rows with 400-character reasons, the last rows' reasons lengthened (up to 500) to
    make up the rest. Sizes are added up row by row, then measured once."""

    def row(n: int, reason_length: int) -> dict[str, Any]:
        return {
            "transaction_id": long_id("ALLOC", n),
            "account_id": "PWR-SD-0001",
            "unit_type": "CEA",
            "vintage": 2025,
            "quantity": 1,
            "reason": "r" * reason_length,
        }

    def measured(value: object) -> int:
        return len(json.dumps(value, separators=(",", ":")).encode())

    rows: list[dict[str, Any]] = []
    total = measured({"rows": []})  # {"rows":[]}, then each row and its comma
    while total + measured(row(len(rows), 400)) + (1 if rows else 0) <= size - 600:
        total += measured(row(len(rows), 400)) + (1 if rows else 0)
        rows.append(row(len(rows), 400))
    if total + measured(row(len(rows), 1)) + 1 <= size:
        total += measured(row(len(rows), 1)) + 1
        rows.append(row(len(rows), 1))
    for last in reversed(rows):
        more = min(size - total, 500 - len(last["reason"]))
        last["reason"] += "r" * more
        total += more
    payload = {"rows": rows}
    assert measured(payload) == size, measured(payload)
    return payload


def test_a_maximal_batch_and_a_maximal_proposal_go_through_repeatedly(pg_api: Api) -> None:
    """Two batches of 10,000 trades with 128-character ids (about 1.7 MB each), the
    second resent as a retry, and two proposals of exactly ``MAX_PAYLOAD_BYTES``: each
    call answers, and another caller's single trade right after it settles at once.

    Figures: the sellers get 100,000 + 50,000 t; each trade moves 1 t from
    PWR-SD-0001 to the trader, so after 20,000 trades (the retry moves nothing) the
    trader holds 20,000 + the 2 single trades of 1 t = 20,002 t."""
    api = pg_api
    seed_market(api.regulator)
    for batch in range(2):
        trades = [
            trade(long_id(f"T{batch}", n), "PWR-SD-0001", TRADER, 1) for n in range(MAX_BATCH)
        ]
        request = pb.SettleTradesRequest(trades=trades)
        assert 1_500_000 < request.ByteSize() <= MAX_BATCH_BYTES
        results = within_watchdog(
            lambda request=request: (
                api.exchange.call(api.exchange.settlement.SettleTrades, request).results
            ),
            f"batch {batch + 1} of 10,000 trades",
        )
        assert [r.status for r in results] == [pb.TRADE_STATUS_SETTLED] * MAX_BATCH
        if batch == 1:  # a retry of the whole batch
            again = within_watchdog(
                lambda request=request: (
                    api.exchange.call(api.exchange.settlement.SettleTrades, request).results
                ),
                "the retry",
            )
            assert {r.status for r in again} == {pb.TRADE_STATUS_ALREADY_SETTLED}
        single = within_watchdog(
            lambda batch=batch: api.clients["exchange2"].settle_trades(
                [trade(f"ONE-{batch}", "PWR-SD-0002", TRADER, 1)]
            ),
            "a single trade after it",
        )
        assert single[0].status == pb.TRADE_STATUS_SETTLED
    assert balance(api.auditor, TRADER, single[0].position) == 20_002

    open_company(api.regulator, "PWR-SD-0009")
    payload = allocation_table(MAX_PAYLOAD_BYTES)
    for n in range(2):
        request = admin_pb.ProposeActionRequest(
            proposal_id=f"P-MAX-{n}",
            kind=admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
            payload_json=json.dumps(payload, separators=(",", ":")),
            reason="the 2025 allocation table, in one proposal",
        )
        proposed = within_watchdog(
            lambda request=request: api.regulator.call(
                api.regulator.administration.ProposeAction, request
            ),
            f"proposal {n + 1}",
        )
        assert proposed.proposal.status == admin_pb.PROPOSAL_STATUS_PENDING
        single = within_watchdog(
            lambda n=n: api.clients["exchange2"].settle_trades(
                [trade(f"AFTER-P-{n}", "PWR-SD-0002", TRADER, 1)]
            ),
            "a single trade after it",
        )
        assert single[0].status == pb.TRADE_STATUS_SETTLED


def test_over_the_byte_limits_is_refused_precisely_and_changes_nothing(pg_api: Api) -> None:
    api = pg_api
    seed_market(api.regulator)
    head = api.registry.recorder.max_notification_id()
    huge = [trade(f"BIG-{n}".ljust(1_000_000, "x"), "PWR-SD-0001", TRADER, 1) for n in range(9)]
    error = rpc_error(
        lambda: api.exchange.call(
            api.exchange.settlement.SettleTrades, pb.SettleTradesRequest(trades=huge)
        )
    )
    assert (error.code, error.reason) == (INVALID, "BATCH_BYTES_TOO_LARGE")
    assert error.metadata["limit_bytes"] == str(MAX_BATCH_BYTES)

    over = allocation_table(MAX_PAYLOAD_BYTES + 1)
    error = rpc_error(
        lambda: api.regulator.call(
            api.regulator.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id="P-OVER",
                kind=admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
                payload_json=json.dumps(over, separators=(",", ":")),
                reason="too big",
            ),
        )
    )
    assert (error.code, error.reason) == (INVALID, "PAYLOAD_TOO_LARGE")
    assert error.metadata["limit_bytes"] == str(MAX_PAYLOAD_BYTES)
    assert api.registry.recorder.max_notification_id() == head

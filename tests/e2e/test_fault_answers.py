"""A database fault is answered as retryable, logged on one line and counted under its
reason: a failover makes many at once, and a traceback each (with an empty reason in
the metrics, as before) buried the log and hid which faults they were."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from registry.persistence.recorder import RegistryPostgresRecorder
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import Api, rpc_error, running_api
from tests.e2e.market import TRADER, seed_market, trade

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_api(tmp_path: Path) -> Iterator[Api]:
    with running_api("postgres", tmp_path) as api:
        yield api


def test_a_write_that_times_out_on_the_table_lock_is_retryable_and_logged_on_one_line(
    pg_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session holds the event table's EXCLUSIVE lock (as a stuck writer would);
    a trade's save waits past the write statement timeout (1 s here) and is cancelled:
    the exchange hears UNAVAILABLE DATABASE_BUSY, nothing is stored, the log has one
    warning and the call's line with the reason, and no traceback."""
    api = pg_api
    seed_market(api.regulator)
    recorder = api.registry.recorder
    assert isinstance(recorder, RegistryPostgresRecorder)
    recorder.set_statement_timeout(1)
    head = recorder.max_notification_id()
    dbname = recorder.datastore.pool.kwargs["dbname"]
    caplog.set_level(logging.INFO, logger="registry.api")
    with psycopg.connect(host="127.0.0.1", dbname=dbname, user="root") as blocker:
        blocker.execute("LOCK TABLE registry_events IN EXCLUSIVE MODE")
        error = rpc_error(
            lambda: api.exchange.settle_trades([trade("T-BLOCKED", "PWR-SD-0001", TRADER, 10)])
        )
        blocker.rollback()
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY")
    assert recorder.max_notification_id() == head
    calls = [
        r for r in caplog.records if r.name == "registry.api" and "SettleTrades" in r.getMessage()
    ]
    assert [r.levelname for r in calls] == ["WARNING", "INFO"], [r.getMessage() for r in calls]
    assert "database fault" in calls[0].getMessage()
    assert "status=UNAVAILABLE DATABASE_BUSY" in calls[1].getMessage()
    assert not any(r.exc_info for r in calls)
    # the same trade goes through once the lock is gone: the retry is safe
    retried = api.exchange.settle_trades([trade("T-BLOCKED", "PWR-SD-0001", TRADER, 10)])
    assert retried[0].status == settlement_pb.TRADE_STATUS_SETTLED

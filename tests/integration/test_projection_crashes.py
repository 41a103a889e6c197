"""Projection workers killed mid-batch resume exactly; rebuilds under load end exact.

Real processes: `registry project --once` is started and SIGKILLed at random moments
during a long catch-up against PostgreSQL, many times, then allowed to finish. The
tables must equal a clean rebuild from position zero: nothing skipped, nothing twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from registry.application import Registry, Trade
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.integrity.authentication import event_key_path
from registry.persistence.engine import make_engine
from registry.readmodels import tables as t
from registry.readmodels.runner import PROJECTION_NAMES, ProjectionRunner
from registry.settings import Settings
from tests.support import EXCHANGE, REGULATOR, fresh_pg_database

pytestmark = pytest.mark.postgres

ACCOUNTS = [f"TRD-{n:04d}" for n in range(8)]
ANY_CEA = UnitSelector(UnitType.CEA)


def seed(registry: Registry, batches: int, size: int, rng: random.Random) -> None:
    """A history with issuance, allocation, trades, holds, refusals and surrenders."""
    registry.open_account(
        REGULATOR,
        "PWR-0001",
        AccountType.COMPLIANCE,
        Holder("Plant", "91110000100001234X", "POWER", "Hubei"),
    )
    for account in ACCOUNTS:
        registry.open_account(REGULATOR, account, AccountType.TRADING, Holder(account))
    registry.issue_units(REGULATOR, "ISS", UnitClass(UnitType.CEA, 2025), 10**7, "")
    registry.transfer(REGULATOR, "RES", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", ANY_CEA, 10**7, "")
    registry.allocate(REGULATOR, "AL", "PWR-0001", ANY_CEA, 10**6, "")
    for account in ACCOUNTS:
        registry.settle_trade(
            EXCHANGE, Trade(f"FUND-{account}", "PWR-0001", account, "CEA", 50_000)
        )
    for batch in range(batches):
        trades = []
        for n in range(size):
            seller, buyer = rng.sample(ACCOUNTS, 2)
            quantity = rng.choice([1, 7, 100, 2_000, 10**6])  # some are refused
            trades.append(Trade(f"B{batch}-{n}", seller, buyer, "CEA", quantity))
        registry.settle_trades(EXCHANGE, trades)
        hold = registry.place_hold(EXCHANGE, f"H{batch}", ACCOUNTS[batch % 8], ANY_CEA, 500, 600)
        if hold.ok and batch % 2:
            registry.release_hold(EXCHANGE, f"H{batch}")
        registry.surrender(REGULATOR, f"S{batch}", "PWR-0001", ANY_CEA, 10, 2025, "")


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row, ordered by primary key, tracking excluded."""
    tables = [table for table in t.metadata.sorted_tables if table is not t.tracking]
    with engine.connect() as conn:
        return {
            table.name: [
                tuple(row)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in tables
        }


def start_worker(url: str) -> subprocess.Popen[bytes]:
    """The worker, its data directory (the ledger's signing key) beside the test's."""
    data_dir = Path(tempfile.gettempdir()) / f"registry-worker-{url.rsplit('/', 1)[-1]}"
    return subprocess.Popen(
        [sys.executable, "-m", "registry.cli", "project", "--once", "--batch-size", "250"],
        env={
            **os.environ,
            "REGISTRY_DATABASE_URL": url,
            "REGISTRY_DATA_DIR": str(data_dir),
            # the key the test's own registry authenticates its events with
            "REGISTRY_EVENT_KEY": str(event_key_path().resolve()),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_progress(
    runner: ProjectionRunner, worker: subprocess.Popen[bytes], head: int, timeout: float = 60.0
) -> None:
    """Until every projection has moved past where it was (or reached the head), or the
    worker has exited."""
    before = runner.positions()
    deadline = time.monotonic() + timeout
    while worker.poll() is None and time.monotonic() < deadline:
        now = runner.positions()
        if all(now[name] > before.get(name, 0) or now[name] >= head for name in now):
            return
        time.sleep(0.005)


def test_workers_killed_at_random_moments_resume_exactly() -> None:
    rng = random.Random(20261128)
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            seed(registry, batches=12, size=600, rng=rng)
            runner = ProjectionRunner(registry, engine)
            head = runner.head()
            interrupted = 0
            for _ in range(10):
                worker = start_worker(url)
                # Kill at a random moment after the worker has committed a batch: its
                # start-up time no longer decides whether the kill lands mid-catch-up.
                wait_for_progress(runner, worker, head)
                time.sleep(rng.uniform(0.0, 0.25))
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
                positions = runner.positions()
                if 0 < min(positions.values()) < head:
                    interrupted += 1
            assert interrupted >= 3, "too few kills landed in the middle of the catch-up"
            worker = start_worker(url)
            _, errors = worker.communicate(timeout=300)
            assert worker.returncode == 0, errors.decode()
            assert set(runner.positions().values()) == {head}

            survived = dump(engine)
            for name in PROJECTION_NAMES:
                runner.rebuild(name)
            assert dump(engine) == survived
            holdings = {(row[0], row[1]): row[5] for row in survived["rm_holdings"]}
            for account in ACCOUNTS:
                [line] = registry.get_holdings(account)
                assert holdings[(account, line.unit_class.key)] == line.total
        finally:
            engine.dispose()
            registry.close()


def test_rebuild_while_writes_continue_ends_equal_to_a_clean_rebuild() -> None:
    rng = random.Random(7)
    with fresh_pg_database() as url:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            seed(registry, batches=3, size=300, rng=rng)
            live = ProjectionRunner(registry, engine, batch_size=200)
            stop = threading.Event()
            follower = threading.Thread(target=live.follow, args=(stop, 0.02))
            follower.start()
            writing = threading.Event()
            writing.set()

            def write() -> None:
                n = 0
                while writing.is_set():
                    seller, buyer = rng.sample(ACCOUNTS, 2)
                    registry.settle_trade(EXCHANGE, Trade(f"W-{n}", seller, buyer, "CEA", 3))
                    n += 1

            writer = threading.Thread(target=write)
            writer.start()
            try:
                for name in ("holdings", "serials", "history"):
                    ProjectionRunner(registry, engine, batch_size=150).rebuild(name)
            finally:
                writing.clear()
                writer.join()
                live.catch_up()
                stop.set()
                follower.join()
            after_load = dump(engine)
            for name in PROJECTION_NAMES:
                live.rebuild(name)
            assert dump(engine) == after_load
        finally:
            engine.dispose()
            registry.close()

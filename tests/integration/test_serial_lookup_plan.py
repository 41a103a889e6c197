"""The serials projection's lookup stays an index probe however the table grows.

Reproduces issue 15 item 8 (the worker stalled in two runs with no faults at all): the
lookup of ``SerialLocations.load`` ran on the worker's one long-lived connection, where
psycopg prepares a statement once it ran five times and PostgreSQL then keeps a generic
plan. Made while ``rm_serial_blocks`` was tiny, that plan is a hash join over every row
with a scan per row for each block's predecessor; on the grown table, before autovacuum
analysed it, one lookup took 15 s instead of 4 ms (here: not done in 10 s, on 60,000
rows). A catch-up starts from a tiny table and grows it, so this is every first start.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from registry.domain.units import UnitClass, UnitType
from registry.persistence.bulk import Writer
from registry.persistence.engine import make_engine
from registry.readmodels import tables as t
from registry.readmodels.serial_locations import SerialLocations
from registry.settings import Settings
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres

KEY = UnitClass(UnitType.CEA, 2025).key
BASE = 10_000_000  # serials as a real ledger has them (the same array types throughout)
GROWN = 60_000


@pytest.fixture()
def engine() -> Iterator[Engine]:
    with fresh_pg_database() as url:
        engine = make_engine(Settings(url))
        try:
            yield engine
        finally:
            engine.dispose()


def add_rows(engine: Engine, start: int, stop: int) -> None:
    """Serial blocks of ten, as the projection writes them (one account)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO rm_serial_blocks SELECT '{KEY}', {BASE} + g * 10 + 1, "
            f"{BASE} + g * 10 + 10, 'ACC' FROM generate_series({start}, {stop - 1}) g"
        )


def test_a_catch_up_from_a_tiny_to_a_large_table_keeps_lookups_fast(engine: Engine) -> None:
    with engine.begin() as conn:  # autovacuum must not come to the rescue mid-test
        conn.exec_driver_sql("ALTER TABLE rm_serial_blocks SET (autovacuum_enabled = off)")
    add_rows(engine, 0, 20)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE rm_serial_blocks")  # the stats of a tiny table
    with engine.connect() as conn:  # the worker's connection, batch after batch
        for _ in range(15):  # the catch-up's first batches, on the tiny table
            with conn.begin():
                found = SerialLocations.load(
                    Writer(conn), t.serial_blocks, [(KEY, BASE + 11, BASE + 15)]
                )
                assert found.rows[KEY] == {BASE + 11: (BASE + 20, "ACC")}
        add_rows(engine, 20, GROWN)  # the batches since grew the table
        taken = [(KEY, BASE + i * 10 + 3, BASE + i * 10 + 4) for i in range(0, GROWN, 500)]
        for _ in range(3):
            with conn.begin():
                conn.exec_driver_sql("SET LOCAL statement_timeout = '10s'")
                started = time.monotonic()
                found = SerialLocations.load(Writer(conn), t.serial_blocks, taken)
                took = time.monotonic() - started
                assert len(found.rows[KEY]) == len(taken)
                assert took < 2.0, f"a lookup of {len(taken)} blocks took {took:.1f}s"

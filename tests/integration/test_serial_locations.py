"""A catch-up from zero keeps the serial blocks' rows in memory (``resident``): batch
after batch it must write exactly what loading each batch's rows from the table writes,
and rows that say where every serial is."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select, text

from registry.persistence.bulk import Writer
from registry.persistence.engine import make_engine
from registry.readmodels import tables as t
from registry.readmodels.serial_locations import SerialLocations
from registry.settings import Settings
from tests.support import fresh_pg_database

KEY = "CEA/2025"
SERIALS = 400
ACCOUNTS = ("A", "B", "C", "D")


@pytest.fixture()
def engines(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    made = [make_engine(Settings(f"sqlite:///{tmp_path / name}.sqlite")) for name in "rl"]
    for engine in made:
        t.metadata.create_all(engine, tables=[t.serial_blocks])
    yield made[0], made[1]
    for engine in made:
        engine.dispose()


def random_moves(
    rng: random.Random, where: list[str], count: int
) -> list[tuple[int, int, str, str]]:
    """``count`` moves of a run of serials all in one account to another, each applied
    to ``where`` (the account of every serial) as it is drawn."""
    moves = []
    for _ in range(count):
        first = rng.randrange(SERIALS)
        source = where[first]
        last = first
        while last + 1 < SERIALS and where[last + 1] == source and rng.random() < 0.8:
            last += 1
        destination = rng.choice([a for a in ACCOUNTS if a != source])
        where[first : last + 1] = [destination] * (last - first + 1)
        moves.append((first, last, source, destination))
    return moves


def rows(engine: Engine) -> list[tuple[str, int, int, str]]:
    b = t.serial_blocks.c
    with engine.connect() as conn:
        found = conn.execute(select(b.unit_class, b.first, b.last, b.account_id).order_by(b.first))
        return [(r[0], int(r[1]), int(r[2]), r[3]) for r in found]


def test_resident_rows_write_what_per_batch_loads_write(engines: tuple[Engine, Engine]) -> None:
    """Resident rows moved by ``move``, loaded ones by ``take`` then ``put``."""
    resident_engine, loaded_engine = engines
    rng = random.Random(20)
    where = ["A"] * SERIALS
    resident = SerialLocations(t.serial_blocks)
    with resident_engine.begin() as conn:
        resident.put(KEY, 0, SERIALS - 1, "A")  # the issuance: a put with nothing taken
        resident.flush(Writer(conn))
    with loaded_engine.begin() as conn:
        issued = SerialLocations.load(Writer(conn), t.serial_blocks, [])
        issued.put(KEY, 0, SERIALS - 1, "A")
        issued.flush(Writer(conn))

    for _ in range(40):
        moves = random_moves(rng, where, rng.randint(1, 12))
        with resident_engine.begin() as conn:
            for first, last, source, destination in moves:
                resident.move(KEY, first, last, source, destination)
            resident.flush(Writer(conn))
        with loaded_engine.begin() as conn:
            taken = [(KEY, first, last) for first, last, _, _ in moves]
            loaded = SerialLocations.load(Writer(conn), t.serial_blocks, taken)
            for first, last, source, destination in moves:
                loaded.take(KEY, first, last, source)
                loaded.put(KEY, first, last, destination)
            loaded.flush(Writer(conn))

        written = rows(resident_engine)
        assert written == rows(loaded_engine)  # a move writes what a take and a put write
        assert len(resident) == len(written)
        assert list(resident.order[KEY]) == sorted(resident.rows[KEY])
        said = [None] * SERIALS
        for _, first, last, account in written:
            assert said[first : last + 1] == [None] * (last - first + 1)  # disjoint
            said[first : last + 1] = [account] * (last - first + 1)
        assert said == where


def test_taking_what_is_not_there_changes_nothing_it_would_write(
    engines: tuple[Engine, Engine],
) -> None:
    """A refused take or put leaves the rows as they were: the flush writes them as put."""
    engine = engines[0]
    resident = SerialLocations(t.serial_blocks)
    resident.put(KEY, 0, 99, "A")
    with pytest.raises(RuntimeError, match="out of step: CEA/2025#50-120 is not all in A"):
        resident.take(KEY, 50, 120, "A")
    with pytest.raises(RuntimeError, match="already in a row"):
        resident.put(KEY, 0, 10, "B")
    with pytest.raises(RuntimeError, match="out of step: CEA/2025#0-10 is not all in B"):
        resident.move(KEY, 0, 10, "B", "C")
    assert list(resident.order[KEY]) == [0]
    with engine.begin() as conn:
        resident.flush(Writer(conn))
    assert rows(engine) == [(KEY, 0, 99, "A")]


def counts(conn: Connection) -> tuple[int, int, int]:
    """Rows of rm_serial_blocks inserted, updated, deleted by this backend, not yet
    flushed to the statistics (the current transaction's among them)."""
    found = conn.execute(
        text(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables "
            "WHERE relname = 'rm_serial_blocks'"
        )
    ).one()
    return int(found[0]), int(found[1]), int(found[2])


@pytest.mark.postgres
def test_a_row_that_keeps_its_start_is_updated_in_place() -> None:
    """A row 0-99 in A; 0-9 move to B. Hand count: the row at 0 keeps its start (now
    0-9 in B), the rest 10-99 in A is new: one update, one insert, no delete
    (PostgreSQL's own counts for the transaction, ``pg_stat_xact_user_tables``)."""
    with fresh_pg_database() as url:
        engine = make_engine(Settings(url))
        try:
            locations = SerialLocations(t.serial_blocks)
            with engine.begin() as conn:
                locations.put(KEY, 0, 99, "A")
                locations.flush(Writer(conn))
            with engine.begin() as conn:
                before = counts(conn)  # the backend's unflushed counts include earlier ones
                locations.move(KEY, 0, 9, "A", "B")
                locations.flush(Writer(conn))
                after = counts(conn)
            assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 0]
            assert rows(engine) == [(KEY, 0, 9, "B"), (KEY, 10, 99, "A")]
        finally:
            engine.dispose()

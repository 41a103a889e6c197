"""The one reader of the raw event log (``registry.persistence.eventlog``): each
option of ``EventLog.select`` on an SQLite log, and batches that cover the log once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from sqlalchemy import create_engine

from registry.persistence.eventlog import EventLog, Row

A, B = uuid4(), uuid4()
ROWS = [
    (A, 1, "t.Opened", b"a1", b"mac1"),
    (B, 1, "t.Opened", b"b1", None),
    (A, 2, "t.Credited", b"a2", b"mac3"),
    (B, 2, "t.Debited", b"b2", b"mac4"),
    (A, 3, "t.Credited", b"a3", b"mac5"),
]


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
        "topic TEXT, state BLOB, authenticator BLOB, "
        "PRIMARY KEY (originator_id, originator_version))"
    )
    conn.executemany(
        "INSERT INTO stored_events VALUES (?, ?, ?, ?, ?)",
        [(o.hex, v, t, s, m) for o, v, t, s, m in ROWS],
    )
    yield conn
    conn.close()


LOG = EventLog.default("sqlite")


def positions(rows: Sequence[Row]) -> list[int]:
    return [row[0] for row in rows]


def test_a_range_after_a_position_and_up_to_another(db: sqlite3.Connection) -> None:
    cursor = db.cursor()
    assert positions(LOG.select(cursor, 0, 10)) == [1, 2, 3, 4, 5]
    assert positions(LOG.select(cursor, 1, 2)) == [2, 3]
    assert positions(LOG.select(cursor, 1, 10, upto=3)) == [2, 3]
    assert LOG.select(cursor, 5, 10) == []


def test_filters_by_topic_and_originator(db: sqlite3.Connection) -> None:
    cursor = db.cursor()
    assert positions(LOG.select(cursor, 0, 10, topics=["t.Credited"])) == [3, 5]
    assert positions(LOG.select(cursor, 0, 10, originator=B)) == [2, 4]
    assert positions(LOG.select(cursor, 0, 10, topics=["t.Opened"], originator=A)) == [1]


def test_state_of_some_topics_only_and_the_authenticator(db: sqlite3.Connection) -> None:
    cursor = db.cursor()
    rows = LOG.select(cursor, 0, 10, states_of=["t.Credited"])
    assert [row[4] for row in rows] == [None, None, b"a2", None, b"a3"]
    assert [row[4] for row in LOG.select(cursor, 0, 10, states_of=[])] == [None] * 5
    [first] = LOG.select(cursor, 0, 1, authenticator=True)
    assert tuple(first) == (1, A.hex, 1, "t.Opened", b"a1", b"mac1")


def test_positions_of_one_aggregates_versions(db: sqlite3.Connection) -> None:
    assert LOG.positions(db.cursor(), A, 1, 3) == {2: 3, 3: 5}


def test_batches_cover_the_log_once(tmp_path: Path) -> None:
    path = f"{tmp_path}/log.sqlite"
    with sqlite3.connect(path) as setup:
        setup.execute(
            "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
            "topic TEXT, state BLOB, authenticator BLOB)"
        )
        setup.executemany(
            "INSERT INTO stored_events VALUES (?, ?, ?, ?, ?)",
            [(o.hex, v, t, s, m) for o, v, t, s, m in ROWS],
        )
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        batches = list(LOG.batches(conn, 0, None, 2, authenticator=True))
        assert [positions(b) for b in batches] == [[1, 2], [3, 4], [5]]
        assert [positions(b) for b in LOG.batches(conn, 0, 4, 2)] == [[1, 2], [3, 4]]
        assert LOG.head(conn) == LOG.latest_position(conn) == 5
        assert UUID(LOG.rows(conn, 0, 1, text_ids=True)[0][1]) == A
    engine.dispose()

"""A save in one statement (migration 0006, ``registry_insert_events``): the same rows,
order, authenticators and notification as the pipelined transaction it replaces, all or
nothing, its wait for the table lock bounded, and the transaction back when the function
is not there (a database downgraded to 0005).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from registry.bootstrap import build_registry
from registry.integrity.authentication import authenticator, load_event_key
from registry.persistence import migrate
from registry.persistence.faults import DATABASE_BUSY, database_fault
from registry.persistence.recorder import RegistryPostgresRecorder
from registry.settings import Settings
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, RegistryPostgresRecorder]]:
    monkeypatch.setenv("REGISTRY_EVENT_KEY", str(tmp_path / "event-key"))
    with fresh_pg_database() as url:
        registry = build_registry(Settings(url))
        try:
            recorder = registry.recorder
            assert isinstance(recorder, RegistryPostgresRecorder)
            yield url, recorder
        finally:
            registry.close()


def head(recorder: RegistryPostgresRecorder) -> int:
    return recorder.max_notification_id() or 0


def events(count: int, version: int = 1) -> list[StoredEvent]:
    return [
        StoredEvent(uuid.uuid4(), version, "tests.insert_function:Filler", f'{{"n":{n}}}'.encode())
        for n in range(count)
    ]


def rows(url: str, after: int) -> list[tuple[int, uuid.UUID, int, str, bytes, bytes]]:
    """The stored rows after position ``after`` (the registry writes its system
    accounts when it is built)."""
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1], r[2], r[3], bytes(r[4]), bytes(r[5]))
            for r in conn.execute(
                "SELECT notification_id, originator_id, originator_version, topic, state, "
                "authenticator FROM registry_events WHERE notification_id > %s "
                "ORDER BY notification_id",
                (after,),
            )
        ]


def test_the_function_and_the_transaction_store_the_same_rows(
    store: tuple[str, RegistryPostgresRecorder], tmp_path: Path
) -> None:
    """Three events through the function, three through the pipelined transaction:
    the next positions h+1..h+3 then h+4..h+6, returned in insert order, each row as
    given with an authenticator the event key verifies."""
    url, recorder = store
    h = head(recorder)
    assert recorder.has_insert_function()
    first, second = events(3), events(3)
    assert recorder.insert_events(first) == [h + 1, h + 2, h + 3]
    recorder._has_function = False
    assert recorder.insert_events(second) == [h + 4, h + 5, h + 6]
    stored = rows(url, h)
    key = load_event_key(tmp_path / "event-key")
    for (position, originator, version, topic, state, tag), event in zip(
        stored, first + second, strict=True
    ):
        assert (originator, version, topic, state) == (
            event.originator_id,
            event.originator_version,
            event.topic,
            event.state,
        ), position
        assert tag == authenticator(key, originator, version, topic, state)


def test_a_save_notifies_the_workers_once_on_commit(
    store: tuple[str, RegistryPostgresRecorder],
) -> None:
    url, recorder = store
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN registry_events")
        recorder.insert_events(events(2))
        heard = list(listener.notifies(timeout=2.0, stop_after=1))
    assert [n.channel for n in heard] == ["registry_events"]


def test_a_save_is_all_or_nothing(store: tuple[str, RegistryPostgresRecorder]) -> None:
    """The third of three events collides with a stored one (same aggregate and
    version): the save raises the store's IntegrityError and none of the three is
    stored, so the next save gets the next position after the first save's one."""
    url, recorder = store
    h = head(recorder)
    [taken] = events(1)
    assert recorder.insert_events([taken]) == [h + 1]
    with pytest.raises(IntegrityError):
        recorder.insert_events([*events(2), taken])
    assert len(rows(url, h)) == 1
    assert recorder.insert_events(events(1))[0] > h + 1


def test_the_wait_for_the_table_lock_is_bounded(
    store: tuple[str, RegistryPostgresRecorder],
) -> None:
    """Another session holds the event table's EXCLUSIVE lock (a stuck writer); with a
    statement timeout of 1 s (the lock timeout is 10 s) the save gives up after about
    1 s, as retryable DATABASE_BUSY, and nothing is stored."""
    url, recorder = store
    h = head(recorder)
    recorder.set_statement_timeout(1)
    assert recorder.lock_wait_ms == 1000
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE registry_events IN EXCLUSIVE MODE")
        began = time.monotonic()
        with pytest.raises(Exception) as raised:
            recorder.insert_events(events(1))
        waited = time.monotonic() - began
        blocker.rollback()
    assert database_fault(raised.value) == DATABASE_BUSY
    assert 0.9 <= waited < 5, waited
    assert rows(url, h) == []


def test_a_database_without_the_function_gets_the_transaction(
    store: tuple[str, RegistryPostgresRecorder],
) -> None:
    """Downgraded to 0005, the function is gone: the recorder, asking again, finds that
    out and saves with the pipelined transaction, small saves and large."""
    url, recorder = store
    h = head(recorder)
    assert recorder.has_insert_function()
    migrate.downgrade(Settings(url), "0005")
    recorder._has_function = None  # as a new recorder: it asks once
    assert not recorder.has_insert_function()
    assert recorder.insert_events(events(3)) == [h + 1, h + 2, h + 3]
    big = [StoredEvent(uuid.uuid4(), 1, "t:Big", b"x" * 20_000)]
    assert recorder.insert_events(big) == [h + 4]
    migrate.upgrade(Settings(url))
    recorder._has_function = None
    assert recorder.has_insert_function() and recorder.insert_events(events(1)) == [h + 5]

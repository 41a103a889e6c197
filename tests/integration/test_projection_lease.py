"""The projection lease on PostgreSQL: one holder at a time, the others stand by, and
the next takes over as soon as the holder's session ends."""

from __future__ import annotations

import threading
import time

import pytest

from registry.persistence.engine import make_engine
from registry.persistence.lease import lease_holder, projection_lease
from registry.settings import Settings
from tests.support import fresh_pg_database

pytestmark = pytest.mark.postgres


def test_one_holder_at_a_time_and_the_next_takes_over() -> None:
    with fresh_pg_database() as url:
        engine = make_engine(Settings(url))
        try:
            stop = threading.Event()
            held_by: list[str] = []
            waited = threading.Event()
            release_first = threading.Event()

            def worker(name: str, release: threading.Event) -> None:
                with projection_lease(engine, stop, wait_seconds=0.1, on_wait=waited.set) as lease:
                    assert lease is not None and not lease.is_set()
                    held_by.append(name)
                    release.wait(10)

            first = threading.Thread(target=worker, args=("first", release_first))
            first.start()
            deadline = time.monotonic() + 10
            while not held_by:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert lease_holder(engine) is not None
            release_second = threading.Event()
            second = threading.Thread(target=worker, args=("second", release_second))
            second.start()
            assert waited.wait(5), "the second worker should stand by"
            assert held_by == ["first"]
            release_first.set()  # the holder goes away: the other takes over
            first.join(10)
            while len(held_by) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert held_by == ["first", "second"]
            release_second.set()
            second.join(10)
            assert lease_holder(engine) is None
        finally:
            engine.dispose()


def test_a_stopped_stand_by_gives_up_without_the_lease() -> None:
    with fresh_pg_database() as url:
        engine = make_engine(Settings(url))
        stop = threading.Event()
        try:
            with projection_lease(engine, stop) as mine:
                assert mine is not None and not mine.is_set()
                stop.set()
                assert mine.wait(2), "stopping must tell the holder to let the lease go"
                with projection_lease(engine, stop, wait_seconds=0.05) as other:
                    assert other is None
        finally:
            engine.dispose()


def test_the_lease_holder_is_this_databases_own() -> None:
    """Advisory locks are per database, ``pg_locks`` is the server's: another
    registry's worker on the same server holds the same key. Before: ``--status`` named
    it as this database's holder (and the first test passed or failed depending on what
    else ran on the server)."""
    with fresh_pg_database() as url, fresh_pg_database() as other_url:
        engine, other = make_engine(Settings(url)), make_engine(Settings(other_url))
        stop = threading.Event()
        try:
            with projection_lease(other, stop) as theirs:
                assert theirs is not None
                assert lease_holder(engine) is None
                holder = lease_holder(other)
                assert holder is not None
                with projection_lease(engine, stop) as mine:
                    assert mine is not None  # not stood by: their lease is not ours
                    mine_holder = lease_holder(engine)
                    assert mine_holder is not None and mine_holder != holder
                stop.set()
        finally:
            engine.dispose()
            other.dispose()

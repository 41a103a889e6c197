"""Two registry processes on one store: each trusts its own cache first (no read round
trip), so each must notice when the other changed what it cached."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import registry.persistence.aggregates as aggregates_module
from registry.application import AllocationRow, Registry, Trade
from registry.bootstrap import build_registry
from registry.domain.accounts import Account
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from tests.support import EXCHANGE, REGULATOR, assert_conserved, fresh_pg_database, open_company

CEA = UnitClass(UnitType.CEA, 2025)
ANY_CEA = UnitSelector(UnitType.CEA)


@contextmanager
def two_registries(backend: str, tmp_path: Path) -> Iterator[tuple[Registry, Registry]]:
    if backend == "postgres":
        with fresh_pg_database() as url:
            first, second = build_registry(Settings(url)), build_registry(Settings(url))
            try:
                yield first, second
            finally:
                first.close()
                second.close()
        return
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    first, second = build_registry(Settings(url)), build_registry(Settings(url))
    try:
        yield first, second
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_stale_cache_never_spends_twice_nor_refuses_wrongly(backend: str, tmp_path: Path) -> None:
    with two_registries(backend, tmp_path) as (a, b):
        for account in ("PWR-0001", "PWR-0002"):
            open_company(a, account)
        a.issue_units(REGULATOR, "ISS", CEA, 1_000, "")
        a.allocate(REGULATOR, "AL-1", "PWR-0001", ANY_CEA, 100, "", source="CN-ISSUANCE")
        # b caches PWR-0001 holding 100 ...
        assert b.get_holdings("PWR-0001")[0].total == 100
        assert b.settle_trade(EXCHANGE, Trade("T-0", "PWR-0001", "PWR-0002", "CEA", 1)).ok
        # ... then a spends 79 of the 99 behind b's back
        assert a.settle_trade(EXCHANGE, Trade("T-1", "PWR-0001", "PWR-0002", "CEA", 79)).ok
        # b's cache says 99: its 50 must be refused once read fresh, not spent twice
        spent = b.settle_trade(EXCHANGE, Trade("T-2", "PWR-0001", "PWR-0002", "CEA", 50))
        assert (spent.ok, spent.refusal_reason) == (False, "INSUFFICIENT_UNITS")
        # and the other way round: a credit b has not seen must not be refused
        a.allocate(REGULATOR, "AL-2", "PWR-0001", ANY_CEA, 500, "", source="CN-ISSUANCE")
        more = b.settle_trade(EXCHANGE, Trade("T-3", "PWR-0001", "PWR-0002", "CEA", 300))
        assert more.ok, more.refusal_reason
        for registry in (a, b):
            holdings = {h.unit_class: h.total for h in registry.get_holdings("PWR-0001")}
            assert holdings == {CEA: 100 + 500 - 1 - 79 - 300}
            assert_conserved(registry)


@pytest.mark.postgres
def test_a_group_decides_on_copies_brought_up_to_date_with_the_other_process(
    tmp_path: Path,
) -> None:
    """b cached 40 accounts, a changed them all: before b's next group is decided, b
    applies a's events to its cached copies (one query), so the group neither loses its
    save nor reads any account afresh, and the copies equal fresh loads."""
    accounts = [f"PWR-{n:04d}" for n in range(40)]
    with two_registries("postgres", tmp_path) as (a, b):
        for account in accounts:
            open_company(b, account)  # b caches each at its first version
        a.issue_units(REGULATOR, "ISS", CEA, 40_000, "")
        a.allocate_many(
            REGULATOR,
            [AllocationRow(f"AL-{x}", x, "CEA", 1_000, "", source="CN-ISSUANCE") for x in accounts],
        )
        attempts: list[int] = []
        retrying = b.store.retrying

        def counting(attempt: Any, *args: Any, **kwargs: Any) -> Any:
            def counted(uow: Any) -> Any:
                attempts[-1] += 1
                return attempt(uow)

            attempts.append(0)
            return retrying(counted, *args, **kwargs)

        b.store.retrying = counting  # type: ignore[method-assign]
        loads: list[Any] = []
        get = b.repository.get

        def counting_get(aggregate_id: Any, **kwargs: Any) -> Any:
            loads.append(aggregate_id)
            return get(aggregate_id, **kwargs)

        b.repository.get = counting_get  # type: ignore[method-assign]
        trades = [
            Trade(f"T-{n}", accounts[n], accounts[(n + 1) % 40], "CEA", 10) for n in range(40)
        ]
        assert all(r.outcome == "SETTLED" for r in b.settle_trades(EXCHANGE, trades))
        assert attempts == [1], "decided on current copies: no lost save"
        assert loads == [], "no account read afresh"
        assert_cached_as_stored(b, a, accounts)
        assert [sum(h.total for h in b.get_holdings(x)) for x in accounts] == [1_000] * 40


@pytest.mark.postgres
def test_after_a_lost_race_the_copies_read_are_brought_up_to_date_in_one_go(tmp_path: Path) -> None:
    accounts = [f"PWR-{n:04d}" for n in range(10)]
    with two_registries("postgres", tmp_path) as (a, b):
        for account in accounts:
            open_company(b, account)
        read = {Account.id_for(x): 1 for x in accounts}
        a.issue_units(REGULATOR, "ISS", CEA, 10_000, "")
        a.allocate_many(
            REGULATOR,
            [AllocationRow(f"AL-{x}", x, "CEA", 1_000, "", source="CN-ISSUANCE") for x in accounts],
        )
        assert b.store.aggregates is not None
        assert b.store.aggregates.refresh(read)
        assert_cached_as_stored(b, a, accounts)


def assert_cached_as_stored(cached_in: Registry, stored_in: Registry, accounts: list[str]) -> None:
    cache = cached_in.repository.cache
    assert cache is not None
    for account in accounts:
        cached = cache.get(Account.id_for(account))
        stored = stored_in.repository.get(Account.id_for(account))
        assert (cached.version, cached.available) == (stored.version, stored.available)


@pytest.mark.postgres
def test_own_saves_move_the_followed_position_unless_another_process_wrote_between(
    tmp_path: Path,
) -> None:
    """The catch-up reads only what others wrote: b's own save moves b's followed
    position past its events, but not past events of a's that b has not read."""
    with two_registries("postgres", tmp_path) as (a, b):
        followed_by_b = b.store.aggregates
        assert followed_by_b is not None
        open_company(b, "PWR-0001")
        followed_by_b.catch_up()  # past the start (a lost insert leaves a gap in the ids)
        assert followed_by_b.position == b.recorder.max_notification_id()
        open_company(b, "PWR-0002")
        assert followed_by_b.position == b.recorder.max_notification_id(), "its own: moved on"
        open_company(a, "PWR-0003")
        followed = followed_by_b.position
        open_company(b, "PWR-0004")
        assert followed_by_b.position == followed, "a's event lies between: still to be read"
        followed_by_b.catch_up()
        assert followed_by_b.position == b.recorder.max_notification_id()


@pytest.mark.postgres
def test_a_quiet_process_keeps_its_cached_accounts_current(tmp_path: Path) -> None:
    """b settled once (its group commit thread runs) and then has no callers while a
    writes 25 allocations. Within ~1 s of quiet, b's group commit thread applies them
    to its cached copies: b has followed the log to a's head before its next caller
    comes, so that caller's group does not wait for the catch-up (which past 20,000
    events would drop the whole cache)."""
    accounts = [f"PWR-{n:04d}" for n in range(25)]
    with two_registries("postgres", tmp_path) as (a, b):
        for account in accounts:
            open_company(b, account)
        a.issue_units(REGULATOR, "ISS", CEA, 25_000, "")
        a.allocate(REGULATOR, "AL-0", accounts[0], ANY_CEA, 100, "", source="CN-ISSUANCE")
        a.allocate(REGULATOR, "AL-1", accounts[1], ANY_CEA, 100, "", source="CN-ISSUANCE")
        assert b.settle_trade(EXCHANGE, Trade("T-0", accounts[0], accounts[1], "CEA", 1)).ok
        assert b.store.aggregates is not None
        a.allocate_many(
            REGULATOR,
            [AllocationRow(f"AL-N-{x}", x, "CEA", 100, "", source="CN-ISSUANCE") for x in accounts],
        )
        head = a.recorder.max_notification_id()
        deadline = time.monotonic() + 5
        while b.store.aggregates.position < head and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.store.aggregates.position == head, "b followed a's writes while quiet"
        cache = b.repository.cache
        assert cache is not None
        for x in accounts:  # each cached copy advanced to the version a wrote
            copy = cache.get(Account.id_for(x))
            assert copy.version == a.repository.get(Account.id_for(x)).version, x
        for x in accounts[2:]:
            assert b.get_holdings(x)[0].total == 100
        assert_conserved(b)


@pytest.mark.postgres
def test_a_process_far_behind_drops_its_cache_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past CACHE_CATCH_UP_LIMIT events written elsewhere (5 here) a process drops its
    cache rather than follow, and logs it: which process then reloads every account it
    touches is otherwise invisible (the 10x year's verified emissions took 5.5 s or
    45 s depending on it). What it reads next is the store's."""
    monkeypatch.setattr(aggregates_module, "CACHE_CATCH_UP_LIMIT", 5)
    with two_registries("postgres", tmp_path) as (a, b):
        open_company(b, "PWR-0001")
        assert b.store.aggregates is not None
        b.store.aggregates.catch_up()
        assert b.repository.cache is not None and b.repository.cache.get(Account.id_for("PWR-0001"))
        for n in range(2, 9):  # seven events b has not followed
            open_company(a, f"PWR-{n:04d}")
        a.issue_units(REGULATOR, "ISS", CEA, 100, "")
        a.allocate(REGULATOR, "AL-1", "PWR-0001", ANY_CEA, 100, "", source="CN-ISSUANCE")
        with caplog.at_level("WARNING", logger="registry.persistence.aggregates"):
            b.store.aggregates.catch_up()
        assert "aggregate cache dropped: more than 5 events" in caplog.text
        with pytest.raises(KeyError):
            b.repository.cache.get(Account.id_for("PWR-0001"))
        assert b.store.aggregates.position == a.recorder.max_notification_id()
        assert b.get_holdings("PWR-0001")[0].total == 100

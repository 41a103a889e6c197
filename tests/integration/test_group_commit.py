"""Concurrent single movements of one process share saves, and each caller still gets
exactly its own answer: its result, its replay, its refusal or its error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from registry.application import Registry, Trade, TradeOutcome
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.errors import (
    AccountExistsWithDifferentContent,
    InvalidCommand,
    RegistryError,
    TransactionExistsWithDifferentContent,
)
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence.write_lock import exclusive_writer, writer_lock
from registry.settings import Settings
from tests.support import EXCHANGE, REGULATOR, assert_conserved, fresh_pg_database, open_company

CEA25 = UnitClass(UnitType.CEA, 2025)
CALLERS = 24


def fund(registry: Registry, accounts: list[str], each: int) -> None:
    for account in accounts:
        open_company(registry, account)
    registry.issue_units(REGULATOR, "ISS", CEA25, each * len(accounts), "issuance")
    registry.transfer(
        REGULATOR,
        "RES",
        "CN-ISSUANCE",
        "CN-ALLOCATION-RESERVE",
        UnitSelector(UnitType.CEA),
        each * len(accounts),
        "reserve",
    )
    for account in accounts:
        registry.allocate(
            REGULATOR, f"AL-{account}", account, UnitSelector(UnitType.CEA), each, "allocation"
        )


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call on its own thread, released together; each one's answer or error."""
    outcomes: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = calls[index]()
        except RegistryError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def count_saves(registry: Registry) -> list[int]:
    """Patch the registry's save to count the events of each save."""
    sizes: list[int] = []
    original = registry.save

    def counting(*objs: Any, **kwargs: Any) -> Any:
        recordings = original(*objs, **kwargs)
        sizes.append(len(recordings))
        return recordings

    registry.save = counting  # type: ignore[method-assign]
    return sizes


def test_concurrent_callers_share_saves_and_each_gets_its_own_answer(registry: Registry) -> None:
    sellers = [f"PWR-{n:04d}" for n in range(CALLERS)]
    fund(registry, [*sellers, "PWR-BUYER"], 100)
    saves = count_saves(registry)
    calls: list[Callable[[], Any]] = []
    for n, seller in enumerate(sellers):
        if n % 6 == 0:  # more than it holds: refused, and recorded as refused
            trade = Trade(f"T-{n}", seller, "PWR-BUYER", "CEA", 101)
        elif n % 6 == 1:  # a destination that does not exist: refused
            trade = Trade(f"T-{n}", seller, "NO-SUCH-ACCOUNT", "CEA", 5)
        else:
            trade = Trade(f"T-{n}", seller, "PWR-BUYER", "CEA", n)
        calls.append(partial(registry.settle_trade, EXCHANGE, trade))
    calls.append(
        lambda: registry.surrender(
            REGULATOR, "BAD", "PWR-0002", UnitSelector(UnitType.CEA), 0, 2025, "x"
        )
    )
    outcomes = at_once(calls)

    assert isinstance(outcomes[-1], InvalidCommand)  # malformed: its caller's error only
    settled = 0
    for n, outcome in enumerate(outcomes[:-1]):
        assert not isinstance(outcome, BaseException), (n, outcome)
        assert outcome.transaction_id == f"T-{n}"
        if n % 6 == 0:
            assert outcome.refusal_reason == "INSUFFICIENT_UNITS", outcome
        elif n % 6 == 1:
            assert outcome.refusal_reason == "UNKNOWN_ACCOUNT", outcome
        else:
            assert outcome.ok and outcome.quantity == n, outcome
            settled += n
    assert sum(h.available for h in registry.get_holdings("PWR-BUYER")) == 100 + settled
    assert_conserved(registry)
    assert len(saves) < CALLERS, f"{len(saves)} saves for {CALLERS} concurrent trades"


def test_concurrent_openings_share_saves_and_each_gets_its_own_answer(registry: Registry) -> None:
    open_company(registry, "PWR-OLD")
    saves = count_saves(registry)
    holder = Holder("Twice Co.", "91110000100001234X", "POWER", "Beijing")
    calls: list[Callable[[], Any]] = [
        partial(open_company, registry, f"PWR-{n:04d}") for n in range(CALLERS)
    ]
    calls += [
        partial(registry.open_account, REGULATOR, "PWR-TWICE", AccountType.COMPLIANCE, holder)
    ] * 2
    calls += [
        partial(
            registry.open_account, REGULATOR, "PWR-OLD", AccountType.TRADING, Holder("Other Ltd")
        ),
        partial(registry.open_account, REGULATOR, "bad id", AccountType.TRADING, Holder("Bad Ltd")),
    ]
    outcomes = at_once(calls)

    assert outcomes[:CALLERS] == [None] * CALLERS
    twice = outcomes[CALLERS : CALLERS + 2]
    assert sorted(o.replayed for o in twice) == [False, True], twice
    assert all(o.account.account_id == "PWR-TWICE" for o in twice)
    assert isinstance(outcomes[-2], AccountExistsWithDifferentContent)
    assert isinstance(outcomes[-1], InvalidCommand) and outcomes[-1].reason == "INVALID_ACCOUNT_ID"
    assert registry.get_account("PWR-OLD").account_type is AccountType.COMPLIANCE
    assert {f"PWR-{n:04d}" for n in range(CALLERS)} <= set(registry.account_ids())
    assert sum(saves) == CALLERS + 1, "each new account is one event, saved once"
    assert len(saves) < CALLERS, f"{len(saves)} saves for {CALLERS + 1} concurrent openings"


def test_the_same_id_at_once_is_settled_once_and_replayed_or_refused(registry: Registry) -> None:
    fund(registry, ["PWR-0001", "PWR-0002"], 100)
    same = Trade("T-SAME", "PWR-0001", "PWR-0002", "CEA", 7)
    other = Trade("T-SAME", "PWR-0001", "PWR-0002", "CEA", 8)
    outcomes = at_once(
        [lambda: registry.settle_trade(EXCHANGE, same)] * 8
        + [lambda: registry.settle_trade(EXCHANGE, other)]
    )

    moved = 100 - sum(h.available for h in registry.get_holdings("PWR-0001"))
    assert moved in (7, 8), "settled once, with one of the two contents"
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(o.ok and o.quantity == moved for o in winners)
    assert sum(not o.replayed for o in winners) == 1, "one settles, the others replay it"
    assert len(winners) == (8 if moved == 7 else 1)
    assert all(isinstance(o, TransactionExistsWithDifferentContent) for o in losers)
    replay = registry.settle_trade(EXCHANGE, same if moved == 7 else other)
    assert replay.replayed and replay.quantity == moved


def test_a_batch_and_single_trades_together_keep_the_ledger_exact(registry: Registry) -> None:
    accounts = [f"PWR-{n:04d}" for n in range(6)]
    fund(registry, accounts, 1000)
    batch = [Trade(f"B-{n}", accounts[n % 6], accounts[(n + 1) % 6], "CEA", 1) for n in range(300)]
    singles = [Trade(f"S-{n}", accounts[(n + 2) % 6], accounts[n % 6], "CEA", 2) for n in range(40)]
    calls: list[Callable[[], Any]] = [lambda: registry.settle_trades(EXCHANGE, batch)]
    calls += [partial(registry.settle_trade, EXCHANGE, t) for t in singles]
    outcomes = at_once(calls)

    assert [r.outcome for r in outcomes[0]] == [TradeOutcome.SETTLED] * 300
    assert all(not isinstance(o, BaseException) and o.ok for o in outcomes[1:]), outcomes
    assert sum(sum(h.available for h in registry.get_holdings(a)) for a in accounts) == 6000
    assert_conserved(registry)


@pytest.mark.postgres
def test_two_processes_racing_for_one_account_all_get_through() -> None:
    """Two registries on one database (two server processes) surrender at once, every
    surrender crediting CN-SURRENDER: their groups race each other, and every surrender
    completes exactly once."""
    companies = [f"PWR-{n:04d}" for n in range(2 * CALLERS)]
    with fresh_pg_database() as url:
        first = build_registry(Settings(url))
        second = build_registry(Settings(url))
        try:
            fund(first, companies, 100)
            calls: list[Callable[[], Any]] = [
                partial(
                    registry.surrender,
                    REGULATOR,
                    f"SUR-{company}",
                    company,
                    UnitSelector(UnitType.CEA),
                    60,
                    2025,
                    "compliance 2025",
                )
                for n, company in enumerate(companies)
                for registry in [(first, second)[n % 2]]
            ]
            outcomes = at_once(calls)
            assert all(not isinstance(o, BaseException) and o.ok for o in outcomes), [
                o for o in outcomes if isinstance(o, BaseException) or not o.ok
            ][:3]
            surrendered = sum(h.total for h in second.get_holdings("CN-SURRENDER"))
            assert surrendered == 60 * len(companies)
            assert_conserved(first)
        finally:
            first.close()
            second.close()


@pytest.mark.postgres
def test_the_writer_lock_excludes_other_processes_and_is_reentrant_in_a_thread() -> None:
    with fresh_pg_database() as url:
        first, second = build_registry(Settings(url)), build_registry(Settings(url))
        try:
            taken = threading.Event()
            release = threading.Event()
            order: list[str] = []

            def holder() -> None:
                with exclusive_writer(first.recorder):
                    with exclusive_writer(first.recorder):  # re-entrant: no self-wait
                        order.append("first holds")
                        taken.set()
                        release.wait(10)
                    order.append("first releases")

            thread = threading.Thread(target=holder)
            thread.start()
            assert taken.wait(10)
            waiter = threading.Thread(target=lambda: _take(second, order))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive(), "the other process got the lock while it was held"
            release.set()
            thread.join(10)
            waiter.join(10)
            assert order == ["first holds", "first releases", "second holds"]
        finally:
            first.close()
            second.close()


@pytest.mark.postgres
def test_first_attempts_share_the_lock_and_a_waiting_retry_goes_before_new_ones() -> None:
    """Shared holders run side by side; an exclusive request waits for them, and a
    shared request made while it waits queues behind it (a retry is never starved)."""
    with fresh_pg_database() as url:
        registries = [build_registry(Settings(url)) for _ in range(3)]
        try:
            order: list[str] = []
            release = threading.Event()

            def hold(n: int, exclusive: bool, entered: threading.Event) -> None:
                with writer_lock(registries[n].recorder, exclusive=exclusive):
                    order.append(f"{n} {'exclusive' if exclusive else 'shared'}")
                    entered.set()
                    release.wait(10)

            def start(n: int, exclusive: bool) -> tuple[threading.Thread, threading.Event]:
                entered = threading.Event()
                thread = threading.Thread(target=hold, args=(n, exclusive, entered))
                thread.start()
                return thread, entered

            shared_0, in_0 = start(0, False)
            assert in_0.wait(10)
            with writer_lock(registries[1].recorder, exclusive=False):
                order.append("1 shared beside 0")
            retry, in_retry = start(1, True)
            assert not in_retry.wait(0.5), "the exclusive lock was granted beside a shared one"
            late, in_late = start(2, False)
            assert not in_late.wait(0.5), "a shared request went before the waiting retry"
            release.set()
            for thread in (shared_0, retry, late):
                thread.join(10)
            assert order == ["0 shared", "1 shared beside 0", "1 exclusive", "2 shared"]
        finally:
            for registry in registries:
                registry.close()


@pytest.mark.postgres
def test_a_process_writing_alone_takes_no_lock_and_one_that_sees_others_shares_it() -> None:
    with fresh_pg_database() as url:
        first, second = build_registry(Settings(url)), build_registry(Settings(url))
        try:
            fund(first, ["PWR-0001", "PWR-0002", "PWR-0003"], 100)
            held, release = threading.Event(), threading.Event()

            def hold_exclusively() -> None:
                with exclusive_writer(second.recorder):
                    held.set()
                    release.wait(10)

            def settle(registry: Registry, trade_id: str) -> threading.Thread:
                thread = threading.Thread(
                    target=registry.settle_trade,
                    args=(EXCHANGE, Trade(trade_id, "PWR-0001", "PWR-0002", "CEA", 1)),
                )
                thread.start()
                return thread

            holder = threading.Thread(target=hold_exclusively)
            holder.start()
            assert held.wait(10)
            alone = settle(first, "T-ALONE")
            alone.join(5)
            assert not alone.is_alive(), "a process writing alone waited for the lock"
            release.set()
            holder.join(10)

            second.settle_trade(EXCHANGE, Trade("T-OTHER", "PWR-0003", "PWR-0002", "CEA", 1))
            settle(first, "T-SEES-OTHER").join(10)  # its catch-up finds the other's events
            held.clear()
            release.clear()
            holder = threading.Thread(target=hold_exclusively)
            holder.start()
            assert held.wait(10)
            shared = settle(first, "T-SHARED")
            shared.join(0.5)
            assert shared.is_alive(), "with another writer about, the group took no lock"
            release.set()
            shared.join(10)
            holder.join(10)
            assert not shared.is_alive()
            assert first.get_transaction("exchange", "T-SHARED").ok
        finally:
            first.close()
            second.close()


def _take(registry: Registry, order: list[str]) -> None:
    with exclusive_writer(registry.recorder):
        order.append("second holds")

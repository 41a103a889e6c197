"""A batch's accounts and obligations are loaded in one go (latest snapshot plus the
events after it), and what is loaded that way is exactly what loading one by one gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import registry.persistence.aggregates as aggregates_module
from registry.application import AllocationRow, EmissionsRow, Registry, Trade
from registry.application.results import RowOutcome
from registry.application.unit_of_work import UnitOfWork
from registry.bootstrap import build_registry
from registry.domain.accounts import Account
from registry.domain.errors import RowsInvalid
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import ComplianceYear, UnitLine
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from tests.support import EXCHANGE, REGULATOR, fresh_pg_database, open_company, open_trader

pytestmark = pytest.mark.postgres
CEA = UnitClass(UnitType.CEA, 2025)
ANY_CEA = UnitSelector(UnitType.CEA)


@contextmanager
def writer_and_reader() -> Iterator[tuple[Registry, Registry, str]]:
    """Two registry processes on one fresh PostgreSQL database (and its URL)."""
    with fresh_pg_database() as url:
        writer, reader = build_registry(Settings(url)), build_registry(Settings(url))
        try:
            yield writer, reader, url
        finally:
            writer.close()
            reader.close()


def funded(writer: Registry, accounts: list[str]) -> None:
    """Open these companies; the first is allocated 3,000 CEA."""
    for account in accounts:
        open_company(writer, account)
    writer.issue_units(REGULATOR, "ISS", CEA, 3_000, "")
    writer.transfer(REGULATOR, "RES", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", ANY_CEA, 3_000, "")
    writer.allocate(REGULATOR, "AL-1", accounts[0], ANY_CEA, 3_000, "")


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def test_prefetched_aggregates_equal_those_loaded_one_by_one(monkeypatch: Any) -> None:
    accounts = ["PWR-0001", "PWR-0002", "PWR-0003"]
    with writer_and_reader() as (writer, reader, _url):
        funded(writer, accounts)
        for n in range(450):  # PWR-0001 and -0002 cross two snapshot intervals
            writer.settle_trade(EXCHANGE, Trade(f"T{n}", "PWR-0001", "PWR-0002", "CEA", 1))
        writer.record_verified_emissions(REGULATOR, [EmissionsRow("PWR-0001", 2025, 7, "report")])
        ids = [Account.id_for(a) for a in [*accounts, "NOPE-0001"]] + [
            ComplianceObligation.id_for("PWR-0001", 2025),
            ComplianceObligation.id_for("PWR-0002", 2025),
        ]
        assert reader.snapshots is not None
        assert reader.snapshots.get(ids[0], desc=True, limit=1), "no snapshot to start from"

        def one_by_one(*_: Any, **__: Any) -> Any:
            raise AssertionError("a prefetched aggregate was loaded again")

        prefetched = UnitOfWork(reader, optimistic=True)
        prefetched.prefetch(ids, reader.store.load_many)
        with monkeypatch.context() as patch:
            patch.setattr(reader.repository, "get", one_by_one)
            found = [
                prefetched.find(i, Account if n < 4 else ComplianceObligation)
                for n, i in enumerate(ids)
            ]
        assert found[3] is None and found[5] is None  # never created
        fresh = UnitOfWork(reader)
        for n, aggregate_id in enumerate(ids):
            expected = fresh.find(aggregate_id, Account if n < 4 else ComplianceObligation)
            assert (found[n] is None) == (expected is None)
            if expected is not None:
                assert state(found[n]) == state(expected)
        assert prefetched.read_versions == fresh.read_versions
        assert prefetched.read_versions[ids[0]] > 400


def test_a_fresh_read_of_cached_aggregates_starts_from_the_cache(monkeypatch: Any) -> None:
    """A retry's fresh read (a non-optimistic unit of work) of aggregates the process
    has cached asks the store only for the events after the cached copies, as the
    library's repository does for one: it must not decode their snapshots again (after
    a 10x year, CN-SURRENDER's holds a million blocks). What it gets is what a new
    process loads from the store: here PWR-0001 after another process's 250 trades."""
    with writer_and_reader() as (writer, reader, url):
        funded(writer, ["PWR-0001", "PWR-0002"])
        ids = [Account.id_for("PWR-0001"), Account.id_for("PWR-0002")]
        cached = reader.store.load_many(ids)  # the reader caches both (prefetch does)
        for aggregate_id, aggregate in cached.items():
            assert reader.repository.cache is not None
            reader.repository.cache.put(aggregate_id, aggregate)
        for n in range(250):  # past a snapshot of both, written by the other process
            writer.settle_trade(EXCHANGE, Trade(f"T{n}", "PWR-0001", "PWR-0002", "CEA", 1))

        snapshot_reads: list[list[Any]] = []
        real = aggregates_module.select_latest_events

        def counted(recorder: Any, wanted: Any) -> Any:
            snapshot_reads.append(list(wanted))
            return real(recorder, wanted)

        monkeypatch.setattr(aggregates_module, "select_latest_events", counted)
        retry = UnitOfWork(reader, optimistic=False)
        retry.prefetch(ids, reader.store.load_many)
        assert snapshot_reads == []  # both started from the cached copies
        found = [retry.find(i, Account) for i in ids]
        assert [a.version for a in found if a] == [
            v + 250 for v in (cached[ids[0]].version, cached[ids[1]].version)
        ]
        monkeypatch.setattr(aggregates_module, "select_latest_events", real)
        restarted = build_registry(Settings(url))  # no cache: snapshot and events
        try:
            expected = [UnitOfWork(restarted).find(i, Account) for i in ids]
            assert [state(a) for a in found] == [state(a) for a in expected]
        finally:
            restarted.close()


def test_an_emissions_table_is_checked_on_the_accounts_openings_alone(monkeypatch: Any) -> None:
    """Checking verified emissions needs each account's type and sector, fixed when it
    was opened: a process that has not cached the accounts reads their opening events
    in one query, not their whole histories (37,000 accounts after a 10x year's trades
    took 45 s). The checks still name every bad row: a trading account, an unknown one,
    unit lines for a steel company."""
    with writer_and_reader() as (writer, reader, _url):
        open_company(writer, "PWR-0001")
        open_company(writer, "STL-0001", sector="STEEL")
        open_trader(writer, "TRD-0001")
        writer.issue_units(REGULATOR, "ISS", CEA, 100, "")
        writer.allocate(
            REGULATOR,
            "AL-1",
            "PWR-0001",
            UnitSelector(UnitType.CEA),
            100,
            "",
            source="CN-ISSUANCE",
        )
        for n in range(30):  # a history the check has no need to replay
            writer.settle_trade(EXCHANGE, Trade(f"T{n}", "PWR-0001", "TRD-0001", "CEA", 1))

        def whole(ids: list[Any]) -> Any:
            raise AssertionError(f"loaded {len(ids)} aggregates whole to check the table")

        monkeypatch.setattr(reader.store, "load_many", whole)  # what prefetches use
        rows = [
            EmissionsRow("PWR-0001", 2025, 7, "report"),
            EmissionsRow("TRD-0001", 2025, 7, "report"),
            EmissionsRow("NOPE-0001", 2025, 7, "report"),
            EmissionsRow("STL-0001", 2025, 7, "report", (UnitLine("GAS", "G1", 7, 7),)),
        ]
        with pytest.raises(RowsInvalid) as refused:
            reader.record_verified_emissions(REGULATOR, rows)
        assert [(v.field, v.reason) for v in refused.value.violations] == [
            ("rows[1].account_id", "NOT_COMPLIANCE_ACCOUNT"),
            ("rows[2].account_id", "UNKNOWN_ACCOUNT"),
            ("rows[3].unit_lines", "UNIT_LINES_NOT_POWER"),
        ]
        monkeypatch.undo()
        recorded = reader.record_verified_emissions(REGULATOR, rows[:1])
        assert [r.status.name for r in recorded.results] == ["RECORDED"]


def test_a_group_reads_what_it_lacks_before_its_attempt(monkeypatch: Any) -> None:
    """A group loads the aggregates it will read that are not cached before its
    attempt (and so before the writer lock, which another process may hold), and the
    copies it caches early are followed like any other. Worked through: the writer
    funds PWR-0001 with 3,000 and records its 2025 emissions (7); the reader caches
    PWR-0001 early, then the writer trades 100 of it to PWR-0002. The reader's
    surrender of 7 loads the obligation (recorded by the writer) before its attempt,
    and in it neither loads nor looks up again what it preloaded (only the 2025
    compliance year, which was not found: it was never started); its catch-up
    advances the early PWR-0001 past the trade, so the save is not refused as stale
    (no lost race) and 3,000 - 100 - 7 = 2,893 remain."""
    with writer_and_reader() as (writer, reader, _url):
        funded(writer, ["PWR-0001", "PWR-0002"])
        writer.record_verified_emissions(REGULATOR, [EmissionsRow("PWR-0001", 2025, 7, "report")])
        store, aggregates = reader.store, reader.store.aggregates
        assert aggregates is not None
        store.preload([Account.id_for("PWR-0001")])
        writer.settle_trade(EXCHANGE, Trade("T-1", "PWR-0001", "PWR-0002", "CEA", 100))

        order: list[tuple[str, list[Any]]] = []
        load, catch_up = aggregates.load, store.catch_up

        def loading(ids: list[Any]) -> Any:
            order.append(("load", list(ids)))
            return load(ids)

        def catching_up() -> None:
            order.append(("attempt", []))
            catch_up()

        monkeypatch.setattr(aggregates, "load", loading)
        monkeypatch.setattr(store, "load_many", loading)
        monkeypatch.setattr(store, "catch_up", catching_up)
        prefetch = UnitOfWork.prefetch

        def prefetching(uow: UnitOfWork, ids: Any, load_many: Any) -> None:
            wanted = list(ids)
            order.append(("prefetch", wanted))
            prefetch(uow, wanted, load_many)

        monkeypatch.setattr(UnitOfWork, "prefetch", prefetching)
        result = reader.surrender(REGULATOR, "SUR-1", "PWR-0001", ANY_CEA, 7, 2025, "2025")
        assert result.ok
        loaded = {i for step, ids in order if step == "load" for i in ids}
        assert ComplianceObligation.id_for("PWR-0001", 2025) in loaded
        assert Account.id_for("PWR-0001") not in loaded  # cached early, advanced since
        assert [step for step, _ in order][-2:] == ["attempt", "prefetch"]  # no load
        # nor a second look at what was preloaded: only at what it did not find then
        assert order[-1] == ("prefetch", [ComplianceYear.id_for(2025)])  # never started
        assert reader._movements.lost_saves == 0
        held = {h.unit_class.key: h.total for h in reader.get_holdings("PWR-0001")}
        assert held == {"CEA/2025": 2_893}


def test_what_did_not_exist_at_the_preload_is_read_again_in_one_query(monkeypatch: Any) -> None:
    """A group's preload caches what exists; what it did not find (an obligation an
    allocation will start) is read again once the group holds the lock, in one query
    with the rest, not looked up one at a time (a batch of 1,000 allocations made
    1,000 queries). Worked through: the reader, which has cached nothing, allocates
    100, 200 and 300 of 2025 to three companies with no 2025 obligation yet; its
    preload loads the reserve and the three accounts and misses the three
    obligations, its attempt prefetches those three, nothing is read one by one, and
    the reserve keeps 3,000 - 600 = 2,400."""
    companies = ["PWR-0001", "PWR-0002", "PWR-0003"]
    with writer_and_reader() as (writer, reader, _url):
        for account in companies:
            open_company(writer, account)
        writer.issue_units(REGULATOR, "ISS", CEA, 3_000, "")
        writer.transfer(
            REGULATOR, "RES", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", ANY_CEA, 3_000, ""
        )
        obligations = {ComplianceObligation.id_for(a, 2025) for a in companies}
        prefetched: list[list[Any]] = []
        single: list[Any] = []
        prefetch, get = UnitOfWork.prefetch, reader.repository.get

        def prefetching(uow: UnitOfWork, ids: Any, load_many: Any) -> None:
            wanted = list(ids)
            prefetched.append(wanted)
            prefetch(uow, wanted, load_many)

        def getting(aggregate_id: Any, **kwargs: Any) -> Any:
            single.append(aggregate_id)
            return get(aggregate_id, **kwargs)

        monkeypatch.setattr(UnitOfWork, "prefetch", prefetching)
        monkeypatch.setattr(reader.repository, "get", getting)
        rows = [
            AllocationRow(f"AL-{n}", account, "CEA", 100 * n, "plan", vintage=2025)
            for n, account in enumerate(companies, start=1)
        ]
        results = reader.allocate_many(REGULATOR, rows)
        assert [r.outcome for r in results] == [RowOutcome.COMPLETED] * 3
        assert [set(ids) for ids in prefetched] == [obligations]
        assert not obligations & set(single)
        reserve = {h.unit_class.key: h.total for h in reader.get_holdings("CN-ALLOCATION-RESERVE")}
        assert reserve == {"CEA/2025": 2_400}

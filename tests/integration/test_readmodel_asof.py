"""Balances and positions as of a past time, from the projected history, on SQLite and
PostgreSQL.

Recorded times are the events' own timestamps (taken by the event library when a
command runs, not from the registry's clock), so the test notes the wall-clock time
between commands and the holdings the write model had then, and asks the read models
for the same moments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from registry.application import EmissionsRow, Registry, Trade
from registry.bootstrap import build_registry
from registry.domain.errors import InvalidCommand, UnknownAccount
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence.engine import make_engine
from registry.readmodels.queries import Page, ReadModels
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import (
    EXCHANGE,
    PROJECT_OWNER,
    REGULATOR,
    FakeClock,
    fresh_pg_database,
    open_company,
    open_trader,
    register_project,
)

CEA25 = UnitClass(UnitType.CEA, 2025)
CEA24 = UnitClass(UnitType.CEA, 2024)
CCER = UnitClass(UnitType.CCER, 2024, "P-0001")
ANY_CEA = UnitSelector(UnitType.CEA)
ACCOUNTS = ["PWR-0001", "PWR-0002", "PWR-0003", "TRD-0001", "TRD-0002"]


@dataclass
class Ledger:
    registry: Registry
    read: ReadModels
    runner: ProjectionRunner
    moments: list[tuple[datetime, dict[str, dict[str, int]]]]
    """(a time between two commands, every account's totals by unit class then)."""


def totals_now(registry: Registry) -> dict[str, dict[str, int]]:
    """Every open account's totals by unit class, from the write model."""
    return {
        account: {h.unit_class.key: h.total for h in registry.get_holdings(account) if h.total}
        for account in registry.account_ids()
    }


def play(registry: Registry, note: Any) -> None:
    """A small year: issuance, allocation, trades, a hold, surrender, cancellation,
    and a class that an account receives and then gives away entirely."""
    for account in ACCOUNTS[:3]:
        open_company(registry, account)
    for account in ACCOUNTS[3:]:
        open_trader(registry, account)
    register_project(registry, "P-0001")
    note()
    registry.issue_units(REGULATOR, "ISS-25", CEA25, 9000, "vintage 2025")
    registry.issue_units(REGULATOR, "ISS-24", CEA24, 3000, "vintage 2024")
    registry.issue_units(REGULATOR, "ISS-CC", CCER, 500, "project P-0001")
    registry.transfer(
        REGULATOR, "RES-1", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", ANY_CEA, 12_000, "to reserve"
    )
    note()
    for n, account in enumerate(ACCOUNTS[:3]):
        registry.allocate(REGULATOR, f"AL-{n}", account, ANY_CEA, 2000 + n * 500, "free")
    note()
    registry.settle_trades(
        EXCHANGE,
        [
            Trade("T-1", "PWR-0001", "TRD-0001", "CEA", 700),
            Trade("T-2", "PWR-0002", "TRD-0001", "CEA", 300),
        ],
    )
    note()
    registry.transfer(
        REGULATOR, "CC-1", PROJECT_OWNER, "TRD-0002", UnitSelector(UnitType.CCER), 500, "offsets"
    )
    registry.place_hold(EXCHANGE, "H-1", "TRD-0001", ANY_CEA, 400, 3600)
    note()
    registry.settle_trade(EXCHANGE, Trade("T-3", "TRD-0002", "PWR-0003", "CCER", 500))
    registry.record_verified_emissions(
        REGULATOR,
        [  # CCER may cover 5 %: 500 t
            EmissionsRow("PWR-0003", 2025, 10_000, "verified")
        ],
    )
    registry.surrender(
        REGULATOR, "SR-1", "PWR-0003", UnitSelector(UnitType.CCER), 500, 2025, "offsets for 2025"
    )
    note()
    registry.cancel(REGULATOR, "CX-1", "PWR-0002", ANY_CEA, 100, "voluntary")
    registry.settle_trade(EXCHANGE, Trade("T-4", "TRD-0001", "PWR-0001", "CEA", 50))
    note()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Ledger]:
    def build(url: str) -> Iterator[Ledger]:
        settings = Settings(url)
        registry = build_registry(settings, clock=clock)
        engine = make_engine(settings)
        moments: list[tuple[datetime, dict[str, dict[str, int]]]] = []

        def note() -> None:
            moments.append((datetime.now(UTC), totals_now(registry)))

        try:
            note()
            play(registry, note)
            runner = ProjectionRunner(registry, engine, batch_size=13)
            runner.catch_up()
            yield Ledger(registry, ReadModels(engine), runner, moments)
        finally:
            engine.dispose()
            registry.close()

    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        with fresh_pg_database() as url:
            yield from build(url)
    else:
        yield from build(f"sqlite:///{tmp_path / 'registry.sqlite'}")


def as_dict(rows: list[dict[str, Any]]) -> dict[str, int]:
    assert all(type(r["total"]) is int for r in rows), "not Decimal (SUM on PostgreSQL)"
    return {r["unit_class"]: r["total"] for r in rows}


def all_pages(fetch: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    token = ""
    while True:
        page: Page = fetch(token)
        rows.extend(page.rows)
        token = page.next_token
        if not token:
            return rows


def test_balances_as_of_every_moment_equal_the_write_model_then(ledger: Ledger) -> None:
    for moment, totals in ledger.moments:
        for account, expected in totals.items():
            assert as_dict(ledger.read.balances_as_of(account, moment)) == expected, (
                moment,
                account,
            )


def test_balances_as_of_now_equal_rm_holdings(ledger: Ledger) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    for account in totals_now(ledger.registry):
        rows = ledger.read.balances_as_of(account, later)
        holdings = {h["unit_class"]: h["total"] for h in ledger.read.holdings(account)}
        assert as_dict(rows) == holdings, account
        assert [r["unit_class"] for r in rows] == sorted(holdings)
        assert all(set(r) == {"unit_class", "total"} for r in rows)
    # PWR-0003 received the CCER and surrendered all of it: the class is omitted.
    assert "CCER/2024/P-0001" not in as_dict(ledger.read.balances_as_of("PWR-0003", later))


def test_as_of_is_inclusive_and_any_timezone_means_the_same_instant(ledger: Ledger) -> None:
    rows = ledger.read.history("TRD-0002", page_size=1000).rows
    credit = next(r for r in rows if r["direction"] == "CREDIT")
    at = credit["recorded_at"]
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    assert as_dict(ledger.read.balances_as_of("TRD-0002", at)) == {"CCER/2024/P-0001": 500}
    just_before = at - timedelta(microseconds=1)
    assert ledger.read.balances_as_of("TRD-0002", just_before) == []
    beijing = timezone(timedelta(hours=8))
    assert ledger.read.balances_as_of(
        "TRD-0002", at.astimezone(beijing)
    ) == ledger.read.balances_as_of("TRD-0002", at)
    naive_utc = at.replace(tzinfo=None)
    assert ledger.read.balances_as_of("TRD-0002", naive_utc) == ledger.read.balances_as_of(
        "TRD-0002", at
    )
    assert ledger.read.balances_as_of("PWR-0001", datetime(2000, 1, 1, tzinfo=UTC)) == []
    with pytest.raises(UnknownAccount):
        ledger.read.balances_as_of("NOPE-0001", at)


def test_positions_now_are_rm_holdings(ledger: Ledger) -> None:
    rows = ledger.read.positions(page_size=1000).rows
    expected = [
        {
            "account_id": account,
            "unit_class": h["unit_class"],
            "total": h["total"],
            "held": h["held"],
        }
        for account in sorted(totals_now(ledger.registry))
        for h in ledger.read.holdings(account)
    ]
    assert rows == expected
    assert all(type(r["total"]) is int and type(r["held"]) is int for r in rows)
    assert {(r["account_id"], r["held"]) for r in rows if r["held"]} == {("TRD-0001", 400)}
    later = datetime.now(UTC) + timedelta(days=1)
    as_of_later = ledger.read.positions(page_size=1000, as_of=later).rows
    assert as_of_later == [{**r, "held": 0} for r in rows], "history does not know holds"


def test_positions_as_of_every_moment(ledger: Ledger) -> None:
    for moment, totals in ledger.moments:
        rows = ledger.read.positions(page_size=1000, as_of=moment).rows
        expected = [
            {"account_id": account, "unit_class": key, "total": total, "held": 0}
            for account in sorted(totals)
            for key, total in sorted(totals[account].items())
        ]
        assert rows == expected, moment


@pytest.mark.parametrize("as_of", [None, "now", "mid"])
def test_positions_page_by_account_and_class(ledger: Ledger, as_of: str | None) -> None:
    when = {None: None, "now": datetime.now(UTC) + timedelta(days=1), "mid": ledger.moments[4][0]}[
        as_of
    ]
    whole = ledger.read.positions(page_size=1000, as_of=when)
    assert whole.next_token == "" and len(whole.rows) >= 7
    for size in (1, 2, 3):
        pages = []
        token = ""
        while True:
            page = ledger.read.positions(page_size=size, page_token=token, as_of=when)
            assert len(page.rows) <= size
            pages.append(page.rows)
            token = page.next_token
            if not token:
                break
        assert [r for p in pages for r in p] == whole.rows
        assert len(pages) >= len(whole.rows) // size
    keys = [(r["account_id"], r["unit_class"]) for r in whole.rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(r["total"] > 0 for r in whole.rows)
    chosen = ["PWR-0001", "TRD-0001", "NOPE-0001"]
    picked = all_pages(
        lambda token: ledger.read.positions(
            page_size=1, page_token=token, as_of=when, account_ids=chosen
        )
    )
    assert picked == [r for r in whole.rows if r["account_id"] in chosen]


def test_positions_validate_page_arguments(ledger: Ledger) -> None:
    with pytest.raises(InvalidCommand) as raised:
        ledger.read.positions(page_size=0)
    assert raised.value.reason == "INVALID_PAGE_SIZE"
    with pytest.raises(InvalidCommand) as raised:
        ledger.read.positions(page_token="not-a-token")
    assert raised.value.reason == "INVALID_PAGE_TOKEN"


def test_new_events_show_after_projection_only(ledger: Ledger) -> None:
    """The as-of queries read the projected history: what the worker has applied."""
    result = ledger.registry.allocate(REGULATOR, "AL-LATE", "PWR-0001", ANY_CEA, 10, "late")
    later = datetime.now(UTC) + timedelta(days=1)
    before = as_dict(ledger.read.balances_as_of("PWR-0001", later))
    ledger.runner.catch_up()
    ledger.read.wait_for(result.position)
    after = as_dict(ledger.read.balances_as_of("PWR-0001", later))
    assert sum(after.values()) == sum(before.values()) + 10

"""The lean settlement path on PostgreSQL: records saved without their aggregates read
back as before, and ids reused across batches are found before the save once a save
has failed on one, so the rest of the group commits in one go."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.application import Registry, Trade, TradeOutcome
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import EXCHANGE, REGULATOR, assert_conserved, open_company, registry_on

CEA25 = UnitClass(UnitType.CEA, 2025)


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Registry]:
    with registry_on("postgres", tmp_path) as registry:
        for account in ("PWR-A", "PWR-B", "PWR-C"):
            open_company(registry, account)
        registry.issue_units(REGULATOR, "ISS", CEA25, 3_000_000, "issuance")
        for account in ("PWR-A", "PWR-B", "PWR-C"):
            registry.allocate(
                REGULATOR,
                f"AL-{account}",
                account,
                UnitSelector(UnitType.CEA),
                1_000_000,
                "allocation",
                source="CN-ISSUANCE",
            )
        yield registry


def trades(prefix: str, count: int) -> list[Trade]:
    pairs = [("PWR-A", "PWR-B"), ("PWR-B", "PWR-C"), ("PWR-C", "PWR-A")]
    return [Trade(f"{prefix}-{n}", *pairs[n % 3], "CEA", 1 + n % 5) for n in range(count)]


def test_a_batchs_records_read_back_as_they_were_answered(market: Registry) -> None:
    results = market.settle_trades(
        EXCHANGE, [*trades("T", 50), Trade("X", "PWR-A", "PWR-B", "CEA", 10**9)]
    )
    assert [r.outcome for r in results] == [TradeOutcome.SETTLED] * 50 + [TradeOutcome.REFUSED]
    for result in results:
        assert result.transaction is not None
        stored = market.get_transaction(EXCHANGE.party, result.trade_id)
        assert stored == result.transaction.__class__(
            **{**vars(result.transaction), "position": None}
        )
    assert_conserved(market)


def test_a_reused_id_fails_one_save_then_is_found_before_saving(market: Registry) -> None:
    movements = market._movements
    market.settle_trades(EXCHANGE, trades("T", 30))
    lost = movements.lost_saves

    first = market.settle_trades(
        EXCHANGE, [Trade("T-5", "PWR-A", "PWR-C", "CEA", 99), *trades("U", 30)]
    )
    assert first[0].outcome is TradeOutcome.REJECTED
    assert first[0].reason == "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"
    assert {r.outcome for r in first[1:]} == {TradeOutcome.SETTLED}
    assert movements.lost_saves == lost + 1  # the first one costs a failed save

    again = market.settle_trades(
        EXCHANGE,
        [Trade("T-6", "PWR-A", "PWR-C", "CEA", 99), trades("T", 8)[7], *trades("V", 30)],
    )
    assert again[0].outcome is TradeOutcome.REJECTED
    assert again[1].outcome is TradeOutcome.ALREADY_SETTLED
    assert {r.outcome for r in again[2:]} == {TradeOutcome.SETTLED}
    assert movements.lost_saves == lost + 1  # found before the save: no second failure
    assert_conserved(market)

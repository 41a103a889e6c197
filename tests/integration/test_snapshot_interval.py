"""Snapshots of an account come less often as its holding grows
(``Registry.snapshot_interval``): at a fixed interval, the accounts every surrender
credits cost more per snapshot as a year goes on, quadratic in the year."""

from __future__ import annotations

import pytest

from registry.application import Registry
from registry.domain.accounts import Account
from registry.domain.obligations import ComplianceObligation
from registry.domain.serials import SerialCounter
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from tests.support import REGULATOR, assert_conserved, open_company

CEA25 = UnitClass(UnitType.CEA, 2025)
ANY_CEA = UnitSelector(UnitType.CEA)


def account_holding(blocks: int) -> Account:
    """An account holding ``blocks`` disjoint blocks (serials 1, 3, 5, ...)."""
    account = object.__new__(Account)
    Account.__init__(account)
    account.available = tuple(SerialBlock(CEA25, 2 * n + 1, 2 * n + 1) for n in range(blocks))
    return account


def test_the_interval_doubles_until_it_covers_the_blocks(registry: Registry) -> None:
    """Interval 200, 50 blocks per event (the shipped figures):

    - up to 200 x 50 = 10,000 blocks: 200;
    - 10,001 blocks: 400 (400 x 50 = 20,000 >= 10,001);
    - 20,001 blocks: 800; 1,000,000 blocks (CN-SURRENDER after a 10x year): 200 x 2^7
      = 25,600 (12,800 x 50 = 640,000 < 1,000,000 <= 25,600 x 50 = 1,280,000).
    """
    interval = registry.snapshot_interval
    assert interval(account_holding(0)) == 200
    assert interval(account_holding(10_000)) == 200
    assert interval(account_holding(10_001)) == 400
    assert interval(account_holding(20_001)) == 800
    big = account_holding(0)
    big.available = (SerialBlock(CEA25, 1, 1),) * 1_000_000  # only its length counts
    assert interval(big) == 25_600


def test_other_aggregates_keep_their_interval(registry: Registry) -> None:
    assert registry.snapshot_interval(object.__new__(SerialCounter)) == 200
    assert registry.snapshot_interval(object.__new__(ComplianceObligation)) == 200
    assert registry.snapshot_interval(object()) is None


def test_a_growing_holding_is_snapshotted_at_doubling_versions(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interval 2 and 1 block per event; the reserve hands one unit at a time to
    PWR-0001 and PWR-0002 in turn, so each of PWR-0001's credits is a block apart from
    the last (serials 1, 3, 5, ...). Its version v holds v - 1 blocks (version 1 opened
    it), and a save of version v is snapshotted when v is a multiple of the interval
    for v - 1 blocks (the smallest 2 x 2^k >= v - 1):

    - v = 2: 1 block, interval 2: snapshot; v = 3: 2 blocks, interval 2: 3 is odd;
    - v = 4: 3 blocks, interval 4: snapshot; v = 5-7: 4-6 blocks, interval 4 then 8;
    - v = 8: 7 blocks, interval 8: snapshot; then 16 and 32.

    So 33 versions give snapshots at 2, 4, 8, 16, 32 (five, where a fixed interval of 2
    gives sixteen), and a restart loads the same holding from them."""
    monkeypatch.setattr(
        Registry, "snapshotting_intervals", {Account: 2, SerialCounter: 2, ComplianceObligation: 2}
    )
    monkeypatch.setattr(Registry, "snapshot_blocks_per_event", 1)
    if registry.snapshots is None:
        pytest.skip("this backend keeps no snapshots")
    open_company(registry, "PWR-0001")
    open_company(registry, "PWR-0002")
    registry.issue_units(REGULATOR, "ISS-1", CEA25, 64, "vintage 2025")
    for n in range(64):
        target = "PWR-0001" if n % 2 == 0 else "PWR-0002"
        result = registry.allocate(
            REGULATOR, f"AL-{n}", target, ANY_CEA, 1, "one unit", source="CN-ISSUANCE"
        )
        assert result.ok, result
    holdings = registry.get_holdings("PWR-0001")
    assert sum(h.available for h in holdings) == 32
    versions = [s.originator_version for s in registry.snapshots.get(Account.id_for("PWR-0001"))]
    assert versions == [2, 4, 8, 16, 32]
    if registry.env.get("PERSISTENCE_MODULE") != "eventsourcing.popo":
        fresh = Registry(env=dict(registry.env))  # a restart: loads from version 32's
        try:
            assert fresh.get_holdings("PWR-0001") == holdings
        finally:
            fresh.close()
    assert_conserved(registry)

"""Housekeeping on every backend: due holds are released and due proposals recorded as
expired, found from the log's hold events without scanning every hold ever placed;
what is not due, or already ended, is left alone."""

from __future__ import annotations

from registry.application import Registry
from registry.application.housekeeping import Housekeeping
from registry.domain.holds import HoldStatus
from registry.domain.proposals import ProposalStatus
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import (
    EXCHANGE,
    REGULATOR,
    FakeClock,
    assert_conserved,
    open_company,
    open_trader,
)

CEA = UnitSelector(UnitType.CEA)


def test_due_holds_and_proposals_expire_once(registry: Registry, clock: FakeClock) -> None:
    open_company(registry, "PWR-0001")
    open_trader(registry, "TRD-0001")
    registry.issue_units(REGULATOR, "ISS-1", UnitClass(UnitType.CEA, 2025), 1_000, "")
    registry.transfer(REGULATOR, "T-1", "CN-ISSUANCE", "PWR-0001", CEA, 1_000, "")
    for hold_id, seconds in (("H-SHORT", 60), ("H-LONG", 3_600), ("H-SETTLED", 60)):
        assert registry.place_hold(EXCHANGE, hold_id, "PWR-0001", CEA, 100, seconds).ok
    registry.release_hold(EXCHANGE, "H-SETTLED")  # ended before it was due
    registry.proposals.propose(
        Principal("mee", "li"),
        "P-1",
        "MARKET_HALT",
        {"reason": "inquiry"},
        "urgent",
        validity_seconds=3_600,
    )
    ticks = iter(range(0, 10_000, 100))
    chores = Housekeeping(
        registry, hold_seconds=1, proposal_seconds=1, monotonic=lambda: float(next(ticks))
    )

    assert chores.tick().holds_expired == 0  # nothing due yet
    clock.advance(61)
    done = chores.tick()
    assert (done.holds_expired, done.proposals_expired) == (1, 0)
    assert registry.get_hold(EXCHANGE.party, "H-SHORT").status is HoldStatus.EXPIRED
    assert registry.get_hold(EXCHANGE.party, "H-LONG").status is HoldStatus.ACTIVE
    clock.advance(2 * 3600)
    done = chores.tick()
    assert (done.holds_expired, done.proposals_expired) == (1, 1)
    assert registry.proposals.get("mee", "P-1").status is ProposalStatus.EXPIRED
    assert chores.tick() == type(done)()  # nothing left to do
    held = {h.unit_class.key: h.held for h in registry.get_holdings("PWR-0001")}
    assert held == {"CEA/2025": 0}
    assert_conserved(registry)

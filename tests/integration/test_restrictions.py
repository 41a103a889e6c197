"""Judicial freezes, origin detentions and the market halt, each imposed by an approved
proposal: a movement they stop is refused naming them, and nothing else is stopped."""

from __future__ import annotations

from typing import Any

import pytest

from registry.application import Registry, Trade
from registry.domain.proposals import ProposalStatus
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import (
    EXCHANGE,
    PROJECT_OWNER,
    REGULATOR,
    assert_conserved,
    open_company,
    open_trader,
    register_project,
)

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
CEA = UnitSelector(UnitType.CEA)
CCER = UnitSelector(UnitType.CCER)


def decided(registry: Registry, proposal_id: str, kind: str, payload: dict[str, Any]) -> str:
    """Propose as one regulator, approve as another; what it produced."""
    registry.proposals.propose(LI, proposal_id, kind, payload, "for the record")
    view = registry.proposals.approve(WANG, "mee", proposal_id).proposal
    assert view.status is ProposalStatus.EXECUTED, view
    return view.result


@pytest.fixture
def market(registry: Registry) -> Registry:
    open_company(registry, "PWR-0001")
    open_trader(registry, "TRD-0001")
    registry.issue_units(REGULATOR, "ISS-CEA", UnitClass(UnitType.CEA, 2025), 100, "")
    register_project(registry, "P-1")
    register_project(registry, "P-0")
    registry.issue_units(REGULATOR, "ISS-CCER", UnitClass(UnitType.CCER, 2024, "P-1"), 50, "")
    registry.transfer(REGULATOR, "T-CEA", "CN-ISSUANCE", "PWR-0001", CEA, 100, "")
    registry.transfer(REGULATOR, "T-CCER", PROJECT_OWNER, "PWR-0001", CCER, 50, "")
    return registry


def trade(registry: Registry, trade_id: str, quantity: int, unit_type: str = "CEA") -> str:
    return registry.settle_trade(
        EXCHANGE, Trade(trade_id, "PWR-0001", "TRD-0001", unit_type, quantity)
    ).refusal_reason


def test_frozen_serials_stay_put_until_released(market: Registry) -> None:
    registry = market
    decided(
        registry,
        "P-FRZ",
        "BLOCK_FREEZE",
        {
            "freeze_id": "COURT-2026-17",
            "account_id": "PWR-0001",
            "order_reference": "(2026) Hu 01",
            "reason": "judicial freeze",
            "blocks": [["CEA/2025", 91, 100]],
        },
    )
    assert trade(registry, "T-1", 50) == ""  # serials 1-50: not frozen
    refused = registry.settle_trade(EXCHANGE, Trade("T-2", "PWR-0001", "TRD-0001", "CEA", 50))
    assert refused.refusal_reason == "SERIALS_FROZEN"
    assert refused.refusal_metadata["freeze"] == "COURT-2026-17"
    assert trade(registry, "T-3", 40) == ""  # 51-90 still move
    decided(
        registry,
        "P-REL",
        "BLOCK_RELEASE",
        {
            "freeze_id": "COURT-2026-17",
            "reason": "order lifted",
            "evidence": "(2026) Hu 01 ruling 2",
        },
    )
    assert trade(registry, "T-4", 10) == ""
    assert_conserved(registry)


def test_a_detained_project_s_units_move_nowhere_until_cleared(market: Registry) -> None:
    registry = market
    decided(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {"project": "P-1", "reference": "CASE-9", "reason": "suspected double counting"},
    )
    assert trade(registry, "T-1", 5, "CCER") == "ORIGIN_DETAINED"
    assert trade(registry, "T-2", 5) == ""  # allowances are not detained
    cancelled = registry.cancel(REGULATOR, "C-1", "PWR-0001", CCER, 1, "x")
    assert cancelled.refusal_reason == "ORIGIN_DETAINED"
    decided(
        registry,
        "P-CLR",
        "ORIGIN_CLEARANCE",
        {"project": "P-1", "evidence": "audit 4", "reason": "cleared by audit"},
    )
    assert trade(registry, "T-3", 5, "CCER") == ""


def test_a_market_halt_stops_settlement_only(market: Registry) -> None:
    registry = market
    decided(registry, "P-HALT", "MARKET_HALT", {"reason": "price manipulation inquiry"})
    assert trade(registry, "T-1", 5) == "MARKET_HALTED"
    assert registry.transfer(REGULATOR, "TR-1", "PWR-0001", "TRD-0001", CEA, 5, "").ok
    assert registry.surrender(REGULATOR, "S-1", "PWR-0001", CEA, 5, 2025, "").ok
    held = registry.place_hold(EXCHANGE, "H-1", "PWR-0001", CEA, 5, 3_600)
    assert held.refusal_reason == "MARKET_HALTED"  # a hold is for settlement
    decided(registry, "P-OPEN", "MARKET_RESUMPTION", {"reason": "inquiry closed"})
    assert trade(registry, "T-2", 5) == ""


def test_frozen_lowest_serials_are_skipped_not_taken(market: Registry) -> None:
    """FIFO takes the lowest serials; a freeze of those leaves the rest movable."""
    registry = market
    decided(
        registry,
        "P-FRZ",
        "BLOCK_FREEZE",
        {
            "freeze_id": "COURT-2026-18",
            "account_id": "PWR-0001",
            "order_reference": "(2026) Hu 02",
            "reason": "judicial freeze",
            "blocks": [["CEA/2025", 1, 10]],
        },
    )
    first = registry.settle_trade(EXCHANGE, Trade("T-1", "PWR-0001", "TRD-0001", "CEA", 50))
    assert first.ok and [(b.first, b.last) for b in first.blocks] == [(11, 60)]
    held = registry.place_hold(EXCHANGE, "H-1", "PWR-0001", CEA, 20, 3_600)
    assert held.ok and [(b.first, b.last) for b in held.blocks] == [(61, 80)]
    surrendered = registry.surrender(REGULATOR, "S-1", "PWR-0001", CEA, 20, 2025, "")
    assert surrendered.ok and [(b.first, b.last) for b in surrendered.blocks] == [(81, 100)]
    refused = registry.surrender(REGULATOR, "S-2", "PWR-0001", CEA, 1, 2025, "")
    assert refused.refusal_reason == "SERIALS_FROZEN"  # only the frozen 1-10 are left
    assert refused.refusal_metadata["freeze"] == "COURT-2026-18"
    assert_conserved(registry)


def test_offsets_of_a_detained_project_are_skipped_for_others(market: Registry) -> None:
    registry = market
    registry.issue_units(REGULATOR, "ISS-P0", UnitClass(UnitType.CCER, 2023, "P-0"), 10, "")
    registry.transfer(REGULATOR, "T-P0", PROJECT_OWNER, "PWR-0001", CCER, 10, "")
    decided(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {"project": "P-0", "reference": "CASE-10", "reason": "suspected double counting"},
    )
    # the 2023 P-0 offsets come first in FIFO order but are detained: P-1 moves instead
    moved = registry.settle_trade(EXCHANGE, Trade("T-1", "PWR-0001", "TRD-0001", "CCER", 50))
    assert moved.ok and {b.unit_class.project for b in moved.blocks} == {"P-1"}
    assert trade(registry, "T-2", 1, "CCER") == "ORIGIN_DETAINED"  # P-0 is all that is left


def test_releasing_a_freeze_that_does_not_exist_fails_naming_it(market: Registry) -> None:
    registry = market
    registry.proposals.propose(
        LI,
        "P-REL",
        "BLOCK_RELEASE",
        {"freeze_id": "COURT-0000-0", "reason": "order lifted", "evidence": "ruling"},
        "x",
    )
    view = registry.proposals.approve(WANG, "mee", "P-REL").proposal
    assert view.status is ProposalStatus.FAILED and view.failure_reason == "UNKNOWN_FREEZE"


def test_more_units_of_a_detained_project_are_not_issued(market: Registry) -> None:
    registry = market
    decided(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {"project": "P-1", "reference": "CASE-11", "reason": "suspected double counting"},
    )
    issued = registry.issue_units(REGULATOR, "ISS-2", UnitClass(UnitType.CCER, 2025, "P-1"), 9, "")
    assert issued.refusal_reason == "ORIGIN_DETAINED"
    assert issued.refusal_metadata["detention"] == "CASE-11"
    assert issued.refusal_metadata["unit_class"] == "CCER/2025/P-1"
    register_project(registry, "P-2")
    other = registry.issue_units(REGULATOR, "ISS-3", UnitClass(UnitType.CCER, 2025, "P-2"), 9, "")
    assert other.ok  # another project is not detained
    assert_conserved(registry)


def _reversal(registry: Registry, proposal_id: str, original: str, override: bool) -> Any:
    payload: dict[str, Any] = {
        "transaction_id": f"REV-{proposal_id}",
        "original_party": REGULATOR.party,
        "original_transaction_id": original,
        "reason": "entered in error",
    }
    if override:
        payload["override_restrictions"] = True
    registry.proposals.propose(LI, proposal_id, "REVERSAL", payload, "for the record")
    return registry.proposals.approve(WANG, "mee", proposal_id).proposal


def test_a_reversal_of_detained_units_needs_an_explicit_override(market: Registry) -> None:
    registry = market
    decided(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {"project": "P-1", "reference": "CASE-12", "reason": "suspected double counting"},
    )
    refused = _reversal(registry, "P-REV-1", "T-CCER", override=False)
    assert refused.status is ProposalStatus.FAILED
    assert refused.failure_reason == "ORIGIN_DETAINED"
    ccer = [h for h in registry.get_holdings("PWR-0001") if h.unit_class.project == "P-1"]
    assert [h.total for h in ccer] == [50]  # the units stayed
    done = _reversal(registry, "P-REV-2", "T-CCER", override=True)
    assert done.status is ProposalStatus.EXECUTED, done
    txn = registry.get_transaction(WANG.party, "REV-P-REV-2")
    assert txn.details["override_restrictions"] is True
    assert_conserved(registry)


def test_a_reversal_of_frozen_serials_needs_an_explicit_override(market: Registry) -> None:
    registry = market
    decided(
        registry,
        "P-FRZ",
        "BLOCK_FREEZE",
        {
            "freeze_id": "COURT-2026-19",
            "account_id": "PWR-0001",
            "order_reference": "(2026) Hu 03",
            "reason": "judicial freeze",
            "blocks": [["CEA/2025", 1, 10]],
        },
    )
    refused = _reversal(registry, "P-REV-1", "T-CEA", override=False)
    assert refused.failure_reason == "SERIALS_FROZEN"
    done = _reversal(registry, "P-REV-2", "T-CEA", override=True)
    assert done.status is ProposalStatus.EXECUTED, done
    assert_conserved(registry)

"""Origin detention with rebuttal, through proposals, on every backend: holders notified
with a deadline, a rebuttal and a holder cleared on it, a holder silent past its
deadline, and the confirmation that forfeits what is still detained in one save
(docs/origins.md). Conservation holds after every step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from registry.application import Registry
from registry.application.commands import EmissionsRow
from registry.domain.errors import (
    RebuttalDeadlinePassed,
    RebuttalPeriodOpen,
    UnknownDetention,
)
from registry.domain.obligations import ComplianceObligation
from registry.domain.origin_detentions import HolderStatus, OriginDetention
from registry.domain.proposals import ProposalStatus
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import (
    PROJECT_OWNER,
    REGULATOR,
    FakeClock,
    assert_conserved,
    open_company,
    open_trader,
    register_project,
)

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
OPERATOR = Principal("huaneng", "operator-wang")
CCER = UnitSelector(UnitType.CCER)
P1 = UnitClass(UnitType.CCER, 2024, "P-1")
of_p2 = UnitSelector(UnitType.CCER, project="P-2")
DIGEST = "ab" * 32


def decide(registry: Registry, proposal_id: str, kind: str, payload: dict[str, Any]) -> Any:
    registry.proposals.propose(LI, proposal_id, kind, payload, "for the record")
    return registry.proposals.approve(WANG, "mee", proposal_id).proposal


def ccer_of(registry: Registry, account: str, project: str = "P-1") -> int:
    return sum(h.total for h in registry.get_holdings(account) if h.unit_class.project == project)


@pytest.fixture
def spread(registry: Registry) -> Registry:
    """P-1's 200 units, issued into its owner's project account: PWR-A 60 (surrenders 30
    of them for 2025), PWR-B 50, TRD-C 40, TRD-D 20, 30 left with the owner; P-2's 50
    units at PWR-A (not detained)."""
    open_company(registry, "PWR-A")
    open_company(registry, "PWR-B")
    open_trader(registry, "TRD-C")
    open_trader(registry, "TRD-D")
    register_project(registry, "P-1")
    register_project(registry, "P-2")
    registry.issue_units(REGULATOR, "ISS-P1", P1, 200, "")
    registry.issue_units(REGULATOR, "ISS-P2", UnitClass(UnitType.CCER, 2024, "P-2"), 50, "")
    registry.issue_units(REGULATOR, "ISS-CEA", UnitClass(UnitType.CEA, 2025), 1_000, "")
    for account, quantity in (("PWR-A", 60), ("PWR-B", 50), ("TRD-C", 40), ("TRD-D", 20)):
        registry.transfer(REGULATOR, f"T-{account}", PROJECT_OWNER, account, CCER, quantity, "")
    registry.transfer(REGULATOR, "T-P2", PROJECT_OWNER, "PWR-A", of_p2, 50, "")
    registry.record_verified_emissions(REGULATOR, [EmissionsRow("PWR-A", 2025, 1_000, "report")])
    of_p1 = UnitSelector(UnitType.CCER, project="P-1")
    assert registry.surrender(REGULATOR, "S-A", "PWR-A", of_p1, 30, 2025, "").ok
    return registry


def test_rebut_clear_ignore_confirm(spread: Registry, clock: FakeClock) -> None:
    """Worked example. P-1 is detained at 2026-06-15 09:30 with a 10-day period: PWR-A
    (60 - 30 surrendered = 30 held), PWR-B 50, TRD-C 40, TRD-D 20 and the owner's
    unsold 30 (notified like any holder) are detained. TRD-C rebuts on day 2 and is
    cleared: its 40 move again. The owner, PWR-B and TRD-D say nothing. On day 11 the
    detention is confirmed: forfeited 30 (PWR-A) + 50 (PWR-B) + 20 (TRD-D) + 30
    (the owner) = 130 units; PWR-A's 30 surrendered units are invalidated, so its
    2025 surrendered total falls from 30 to 0 and it owes 30 t again by day 11 + 30."""
    registry = spread
    view = decide(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {
            "origin": "PROJECT:P-1",
            "reference": "MEE-D-7",
            "reason": "forced labour",
            "rebuttal_days": 10,
        },
    )
    assert view.status is ProposalStatus.EXECUTED, view
    detention = registry.store.find(OriginDetention.id_for("P-1"), OriginDetention)
    assert detention is not None
    assert {h.account_id: h.quantity for h in detention.notified} == {
        PROJECT_OWNER: 30,
        "PWR-A": 30,
        "PWR-B": 50,
        "TRD-C": 40,
        "TRD-D": 20,
    }
    deadline = clock.now + timedelta(days=10)
    assert {h.deadline for h in detention.notified} == {deadline}
    assert registry.restrictions.restricted_quantities("PWR-A") == {"CCER/2024/P-1": (30, 0)}
    # issuing more, or moving any, is refused
    assert (
        registry.issue_units(REGULATOR, "ISS-MORE", P1, 5, "").refusal_reason == "ORIGIN_DETAINED"
    )

    clock.advance(2 * 86_400)
    rebuttal = registry.origins.submit_rebuttal(
        OPERATOR, "P-1", "TRD-C", "R-1", "bought from an audited supply chain", [DIGEST]
    )
    assert rebuttal.holder.status is HolderStatus.UNDER_REVIEW
    again = registry.origins.submit_rebuttal(
        OPERATOR, "P-1", "TRD-C", "R-1", "bought from an audited supply chain", [DIGEST]
    )
    assert again.replayed
    with pytest.raises(RebuttalPeriodOpen):  # PWR-B and TRD-D may still rebut
        registry.origins.confirm(REGULATOR, "P-1", "too early")
    cleared = decide(
        registry,
        "P-CLR-C",
        "ORIGIN_HOLDER_CLEARANCE",
        {"origin": "P-1", "account_id": "TRD-C", "evidence": "audit 12", "reason": "rebutted"},
    )
    assert cleared.status is ProposalStatus.EXECUTED, cleared
    assert registry.transfer(REGULATOR, "T-C-D", "TRD-C", "TRD-D", CCER, 40, "").ok
    assert registry.transfer(REGULATOR, "T-B-D", "PWR-B", "TRD-D", CCER, 1, "").refusal_reason == (
        "ORIGIN_DETAINED"
    )
    assert_conserved(registry)

    clock.advance(9 * 86_400)  # day 11: past every deadline
    with pytest.raises(RebuttalDeadlinePassed):
        registry.origins.submit_rebuttal(OPERATOR, "P-1", "PWR-B", "R-2", "late", [DIGEST])
    confirmed = decide(
        registry,
        "P-CONF",
        "ORIGIN_CONFIRMATION",
        {"origin": "P-1", "reason": "presumption not rebutted"},
    )
    assert confirmed.status is ProposalStatus.EXECUTED, confirmed
    assert "130 units forfeited in 4 accounts" in confirmed.result
    again = registry.origins.confirm(REGULATOR, "P-1", "a retry")  # answered, not repeated
    assert again.forfeited == {PROJECT_OWNER: 30, "PWR-A": 30, "PWR-B": 50, "TRD-D": 20}
    assert again.invalidated == {("PWR-A", 2025): 30}
    assert ccer_of(registry, "PWR-A") == 0
    assert ccer_of(registry, "PWR-A", "P-2") == 50  # another project: untouched
    assert ccer_of(registry, "PWR-B") == 0
    assert ccer_of(registry, "TRD-D") == 40  # the cleared units it bought stay
    assert ccer_of(registry, PROJECT_OWNER) == 0
    assert ccer_of(registry, "CN-CANCELLATION") == 130
    forfeiture = registry.get_transaction("mee", "FORFEIT-MEE-D-7-PWR-B")
    assert forfeiture.kind is TransactionKind.FORFEITURE and forfeiture.quantity == 50
    assert forfeiture.details["detention"] == "MEE-D-7"
    status = registry.get_compliance_status("PWR-A", 2025)
    assert status.surrendered_ccer == 0
    obligation = registry.store.find(
        ComplianceObligation.id_for("PWR-A", 2025), ComplianceObligation
    )
    assert obligation is not None and obligation.replacement_owed == 30
    assert obligation.replacement_deadline == (clock.now + timedelta(days=30)).date().isoformat()
    assert registry.restrictions.restricted_quantities("PWR-B") == {}
    # the replacement: 30 t of P-2 (not detained) surrendered again
    replaced = registry.surrender(REGULATOR, "S-A2", "PWR-A", of_p2, 30, 2025, "replacement")
    assert replaced.ok
    status = registry.get_compliance_status("PWR-A", 2025)
    assert (status.surrendered_ccer, status.invalidated, status.replacement_remaining) == (
        30,
        30,
        0,
    )
    assert_conserved(registry)


def test_a_unit_class_origin_detains_one_vintage_only(registry: Registry) -> None:
    open_trader(registry, "TRD-C")
    open_trader(registry, "TRD-D")
    register_project(registry, "P-1")
    registry.issue_units(REGULATOR, "ISS-24", P1, 10, "")
    registry.issue_units(REGULATOR, "ISS-25", UnitClass(UnitType.CCER, 2025, "P-1"), 10, "")
    registry.transfer(REGULATOR, "T-1", PROJECT_OWNER, "TRD-C", CCER, 20, "")
    view = decide(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {"origin": "UNIT_CLASS:CCER/2024/P-1", "reference": "MEE-D-8", "reason": "vintage"},
    )
    assert view.status is ProposalStatus.EXECUTED, view
    assert registry.restrictions.restricted_quantities("TRD-C") == {"CCER/2024/P-1": (10, 0)}
    moved = registry.transfer(REGULATOR, "T-2", "TRD-C", "TRD-D", CCER, 10, "")
    assert moved.ok and {b.unit_class.vintage for b in moved.blocks} == {2025}
    refused = registry.transfer(REGULATOR, "T-3", "TRD-C", "TRD-D", CCER, 1, "")
    assert refused.refusal_reason == "ORIGIN_DETAINED"
    assert refused.refusal_metadata["origin"] == "UNIT_CLASS:CCER/2024/P-1"
    assert registry.issue_units(REGULATOR, "ISS-24b", P1, 1, "").refusal_reason == "ORIGIN_DETAINED"
    assert registry.issue_units(
        REGULATOR, "ISS-25b", UnitClass(UnitType.CCER, 2025, "P-1"), 1, ""
    ).ok
    [listed] = [
        r for r in registry.restrictions.list_restrictions() if r.kind == "ORIGIN_DETENTION"
    ]
    assert listed.restriction_id == "UNIT_CLASS:CCER/2024/P-1" and listed.accounts == ("TRD-C",)
    assert_conserved(registry)


def test_a_rebuttal_needs_a_detention_and_a_notified_holder(spread: Registry) -> None:
    registry = spread
    with pytest.raises(UnknownDetention):
        registry.origins.submit_rebuttal(OPERATOR, "P-9", "TRD-C", "R-1", "x", [DIGEST])
    decide(
        registry, "P-DET", "ORIGIN_DETENTION", {"project": "P-1", "reference": "D-1", "reason": "x"}
    )
    open_trader(registry, "TRD-E")
    refused = registry.origins.submit_rebuttal
    with pytest.raises(Exception) as caught:
        refused(OPERATOR, "P-1", "TRD-E", "R-1", "x", [DIGEST])
    assert getattr(caught.value, "reason", "") == "HOLDER_NOT_NOTIFIED"
    with pytest.raises(Exception) as caught:
        refused(OPERATOR, "P-1", "TRD-C", "R-1", "x", ["not-a-digest"])
    assert getattr(caught.value, "reason", "") == "INVALID_EVIDENCE_DIGEST"
    uncleared = decide(
        registry,
        "P-CLR",
        "ORIGIN_HOLDER_CLEARANCE",
        {"origin": "P-1", "account_id": "TRD-C", "evidence": "e", "reason": "r"},
    )
    assert uncleared.status is ProposalStatus.FAILED
    assert uncleared.failure_reason == "REBUTTAL_NOT_SUBMITTED"

"""Four eyes through the application on every backend: a proposal takes effect only
when another regulator approves it, its outcome is recorded, and a proposal can be
rejected, withdrawn or expire without effect."""

from __future__ import annotations

from typing import Any

import pytest

from registry.application import Registry
from registry.domain.errors import (
    InvalidCommand,
    ProposalExistsWithDifferentContent,
    ProposalExpired,
    ProposalNotPending,
    SelfApprovalForbidden,
    UnknownProposal,
)
from registry.domain.proposals import ProposalStatus
from registry.domain.transactions import Principal
from tests.support import FakeClock, open_company

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
ISSUANCE = {
    "transaction_id": "ISS-2025",
    "unit_type": "CEA",
    "vintage": 2025,
    "quantity": 5_000,
    "reason": "2025 allocation",
}


def issued(registry: Registry) -> int:
    return sum(line.issued for line in registry.supply())


def test_nothing_takes_effect_before_a_second_regulator_approves(registry: Registry) -> None:
    proposed = registry.proposals.propose(LI, "P-1", "ISSUANCE", ISSUANCE, "2025 plan")
    assert proposed.proposal.status is ProposalStatus.PENDING and proposed.position
    assert registry.proposals.propose(LI, "P-1", "ISSUANCE", ISSUANCE, "again").replayed
    with pytest.raises(ProposalExistsWithDifferentContent):
        registry.proposals.propose(LI, "P-1", "ISSUANCE", {**ISSUANCE, "quantity": 6_000}, "x")
    assert issued(registry) == 0

    with pytest.raises(SelfApprovalForbidden):
        registry.proposals.approve(LI, "mee", "P-1")
    assert issued(registry) == 0
    assert registry.proposals.get("mee", "P-1").status is ProposalStatus.PENDING

    done = registry.proposals.approve(WANG, "mee", "P-1")
    view = done.proposal
    assert (view.status, view.approver, view.result) == (
        ProposalStatus.EXECUTED,
        "mee/regulator-wang",
        "mee:ISS-2025",
    )
    assert issued(registry) == 5_000
    txn = registry.get_transaction("mee", "ISS-2025")
    assert txn.principal == "mee/regulator-wang"
    again = registry.proposals.approve(WANG, "mee", "P-1")  # a retry: nothing twice
    assert again.replayed and issued(registry) == 5_000
    with pytest.raises(ProposalNotPending):
        registry.proposals.approve(Principal("mee", "regulator-zhao"), "mee", "P-1")


def test_an_approved_action_the_ledger_refuses_is_recorded_as_failed(registry: Registry) -> None:
    open_company(registry, "PWR-0001")
    registry.proposals.propose(LI, "P-ISS", "ISSUANCE", ISSUANCE, "plan")
    registry.proposals.approve(WANG, "mee", "P-ISS")
    cancel = {
        "transaction_id": "CXL-1",
        "account_id": "PWR-0001",
        "unit_type": "CEA",
        "quantity": 10,
        "reason": "court order",
    }
    registry.proposals.propose(LI, "P-CXL", "REGULATOR_CANCELLATION", cancel, "fraud case")
    failed = registry.proposals.approve(WANG, "mee", "P-CXL").proposal
    assert (failed.status, failed.failure_reason) == (ProposalStatus.FAILED, "INSUFFICIENT_UNITS")


def test_rules_freezes_and_allocation_tables_wait_for_approval(registry: Registry) -> None:
    open_company(registry, "PWR-0001")
    registry.proposals.propose(LI, "P-ISS", "ISSUANCE", ISSUANCE, "plan")
    registry.proposals.approve(WANG, "mee", "P-ISS")
    proposals: dict[str, tuple[str, dict[str, Any]]] = {
        "P-RULES": (
            "RULE_CHANGE",
            {"year": 2025, "sector": "POWER", "rules": {"ccer_cap_bps": 1_000}, "reason": "plan"},
        ),
        "P-FRZ": (
            "ACCOUNT_FREEZE",
            {"account_id": "PWR-0001", "reason": "audit", "request_id": "FRZ-1"},
        ),
        "P-ALLOC": (
            "ALLOCATION_TABLE",
            {
                "rows": [
                    {
                        "transaction_id": "AL-1",
                        "account_id": "PWR-0001",
                        "unit_type": "CEA",
                        "vintage": 2025,
                        "quantity": 800,
                        "source": "CN-ISSUANCE",
                    }
                ]
            },
        ),
    }
    for proposal_id, (kind, payload) in proposals.items():
        registry.proposals.propose(LI, proposal_id, kind, payload, "for approval")
    assert registry.get_compliance_rules(2025).rules == {}
    assert str(registry.get_account("PWR-0001").state) == "OPEN"
    assert registry.get_holdings("PWR-0001") == []
    pending = registry.proposals.list_proposals("PENDING")
    assert {p.proposal_id for p in pending} == set(proposals)

    registry.proposals.approve(WANG, "mee", "P-ALLOC")
    registry.proposals.approve(WANG, "mee", "P-RULES")
    registry.proposals.approve(WANG, "mee", "P-FRZ")
    assert registry.get_compliance_rules(2025).for_sector("POWER").ccer_cap_bps == 1_000
    assert str(registry.get_account("PWR-0001").state) == "FROZEN"
    assert sum(h.total for h in registry.get_holdings("PWR-0001")) == 800
    assert {p.status for p in registry.proposals.list_proposals()} == {ProposalStatus.EXECUTED}


def test_rejected_withdrawn_and_expired_proposals_never_take_effect(
    registry: Registry, clock: FakeClock
) -> None:
    for proposal_id in ("P-REJ", "P-WD", "P-EXP"):
        registry.proposals.propose(
            LI,
            proposal_id,
            "ISSUANCE",
            {**ISSUANCE, "transaction_id": f"ISS-{proposal_id}"},
            "plan",
            validity_seconds=3_600,
        )
    rejected = registry.proposals.reject(WANG, "mee", "P-REJ", "wrong quantity").proposal
    assert (rejected.status, rejected.rejected_by) == (
        ProposalStatus.REJECTED,
        "mee/regulator-wang",
    )
    with pytest.raises(ProposalNotPending):
        registry.proposals.approve(WANG, "mee", "P-REJ")
    registry.proposals.reject(LI, "mee", "P-WD", "withdrawn by its proposer")
    clock.advance(3_600)
    with pytest.raises(ProposalExpired):
        registry.proposals.approve(WANG, "mee", "P-EXP")
    assert [v.proposal_id for v in registry.proposals.expire_due()] == ["P-EXP"]
    assert registry.proposals.get("mee", "P-EXP").status is ProposalStatus.EXPIRED
    assert issued(registry) == 0


def test_a_proposal_that_could_not_be_carried_out_is_refused_at_once(registry: Registry) -> None:
    for kind, payload, field in (
        ("ISSUANCE", {**ISSUANCE, "quantity": "lots"}, "payload.quantity"),
        ("ALLOCATION_TABLE", {"rows": []}, "payload.rows"),
        (
            "RULE_CHANGE",
            {"year": 2025, "sector": "POWER", "rules": {"ccer_cap_bps": -1}},
            "rules.ccer_cap_bps",
        ),
    ):
        with pytest.raises(InvalidCommand) as raised:
            registry.proposals.propose(LI, "P-BAD", kind, payload, "x")
        fields = (
            {v.field for v in raised.value.violations}
            if raised.value.violations
            else {raised.value.metadata.get("field")}
        )
        assert field in fields, (kind, raised.value)
    with pytest.raises(InvalidCommand) as no_reason:
        registry.proposals.propose(LI, "P-HALT", "MARKET_HALT", {}, "x")
    assert (no_reason.value.reason, no_reason.value.metadata["field"]) == (
        "INVALID_PAYLOAD",
        "payload.reason",
    )
    with pytest.raises(UnknownProposal):
        registry.proposals.approve(WANG, "mee", "P-NONE")
    assert registry.proposals.list_proposals() == []


def test_verified_emissions_and_year_closing_wait_for_approval(registry: Registry) -> None:
    """Issue 18 item 7: a table of verified emissions and the closing of a year change
    every company's obligation, so they are proposals a second regulator approves. The
    table's ``reason`` stands for every row that gives none (one verification campaign)."""
    open_company(registry, "PWR-0001")
    open_company(registry, "PWR-0002")
    table = {
        "reason": "verification reports 2025",
        "rows": [
            {"account_id": "PWR-0001", "compliance_year": 2025, "verified_emissions": 1_000},
            {
                "account_id": "PWR-0002",
                "compliance_year": 2025,
                "verified_emissions": 2_000,
                "reason": "report V-2",
            },
        ],
    }
    registry.proposals.propose(LI, "P-VE", "VERIFIED_EMISSIONS", table, "2025 figures")
    assert registry.get_compliance_status("PWR-0001", 2025).verified_emissions is None
    done = registry.proposals.approve(WANG, "mee", "P-VE").proposal
    assert (done.status, done.result) == (
        ProposalStatus.EXECUTED,
        "2 of 2 verified emissions rows recorded",
    )
    assert registry.get_compliance_status("PWR-0001", 2025).verified_emissions == 1_000
    assert registry.get_compliance_status("PWR-0002", 2025).verified_emissions == 2_000

    registry.proposals.propose(
        LI, "P-CLOSE", "YEAR_CLOSING", {"year": 2025, "reason": "deadline passed"}, "close"
    )
    assert not registry.get_compliance_rules(2025).closed
    closed = registry.proposals.approve(WANG, "mee", "P-CLOSE").proposal
    assert closed.status is ProposalStatus.EXECUTED
    assert closed.result.startswith("year 2025 closed: 2 obligations, 2 short")
    assert registry.get_compliance_rules(2025).closed


def test_a_bad_emissions_table_or_closing_is_refused_when_proposed(registry: Registry) -> None:
    row = {"account_id": "PWR-0001", "compliance_year": 2025, "verified_emissions": 1}
    for kind, payload, field in (
        ("VERIFIED_EMISSIONS", {"rows": []}, "payload.rows"),
        ("VERIFIED_EMISSIONS", {"rows": [{**row, "account_id": "pwr 1"}]}, "payload.rows[0]"),
        (
            "VERIFIED_EMISSIONS",
            {"reason": "r", "rows": [row, {**row, "verified_emissions": -5}]},
            "payload.rows[1]",
        ),
        ("YEAR_CLOSING", {"year": 1999, "reason": "x"}, "payload.year"),
        ("YEAR_CLOSING", {"year": 2025}, "payload.reason"),
    ):
        with pytest.raises(InvalidCommand) as raised:
            registry.proposals.propose(LI, "P-BAD", kind, payload, "x")
        assert raised.value.metadata.get("field") == field, (kind, payload, raised.value)
    assert registry.proposals.list_proposals() == []

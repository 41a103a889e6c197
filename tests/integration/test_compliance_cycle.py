"""One compliance year through the application on every backend: rules set as data,
surrenders judged by them (each refusal recorded with its reason), the year closed
with shortfalls fixed and notified, and, after the correction deadline, the shortfall
deducted from the next year's allocation."""

from __future__ import annotations

import pytest

from registry.application import AllocationRow, ComplianceState, EmissionsRow, Registry, RowOutcome
from registry.domain.accounts import AccountType, Holder
from registry.domain.errors import ComplianceYearClosed, RowsInvalid
from registry.domain.rules import ComplianceRules
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import (
    REGULATOR,
    FakeClock,
    assert_conserved,
    open_company,
    register_project,
)

CEA = UnitSelector(UnitType.CEA)
CCER = UnitSelector(UnitType.CCER)


def surrender(
    registry: Registry,
    txn: str,
    account: str,
    selector: UnitSelector,
    quantity: int,
    year: int = 2025,
) -> str:
    """Surrender; the refusal reason, or "" when it completed."""
    result = registry.surrender(REGULATOR, txn, account, selector, quantity, year, "compliance")
    return result.refusal_reason


@pytest.fixture
def year(registry: Registry) -> Registry:
    """Two power companies and a cement company, allocated 2025 CEA, holding some 2026
    CEA and CCER, with verified 2025 emissions."""
    for account, sector in (("PWR-A", "POWER"), ("PWR-B", "POWER"), ("CEM-C", "CEMENT")):
        open_company(registry, account, sector)
    registry.issue_units(REGULATOR, "ISS-25", UnitClass(UnitType.CEA, 2025), 3_000, "")
    registry.issue_units(REGULATOR, "ISS-26", UnitClass(UnitType.CEA, 2026), 3_000, "")
    owner = register_project(registry, "P-0001")
    registry.issue_units(REGULATOR, "ISS-CCER", UnitClass(UnitType.CCER, 2024, "P-0001"), 300, "")
    for account in ("PWR-A", "PWR-B", "CEM-C"):
        registry.allocate(
            REGULATOR,
            f"AL25-{account}",
            account,
            UnitSelector(UnitType.CEA, 2025),
            800,
            "2025 pre-allocation",
            source="CN-ISSUANCE",
        )
        registry.transfer(
            REGULATOR,
            f"V26-{account}",
            "CN-ISSUANCE",
            account,
            UnitSelector(UnitType.CEA, 2026),
            200,
            "next year's, early",
        )
        registry.transfer(REGULATOR, f"CCER-{account}", owner, account, CCER, 100, "offsets bought")
    registry.record_verified_emissions(
        REGULATOR,
        [
            EmissionsRow("PWR-A", 2025, 1_000, "report"),
            EmissionsRow("PWR-B", 2025, 1_000, "report"),
            EmissionsRow("CEM-C", 2025, 900, "report"),
        ],
    )
    return registry


def test_surrenders_are_judged_by_the_year_s_rules_for_the_sector(year: Registry) -> None:
    registry = year
    assert surrender(registry, "S-CCER-OVER", "PWR-A", CCER, 51) == "CCER_CAP_EXCEEDED"
    assert surrender(registry, "S-CCER", "PWR-A", CCER, 50) == ""
    assert (
        surrender(registry, "S-ADVANCE", "PWR-A", UnitSelector(UnitType.CEA, 2026), 10)
        == "ADVANCE_USE_NOT_ALLOWED"
    )
    assert (
        surrender(registry, "S-2024", "PWR-A", UnitSelector(UnitType.CEA, 2026), 10, year=2024)
        == "INELIGIBLE_VINTAGE"
    )
    # borrowing: half the gap (obligation 1,000 - allocation 800 = 200): 100 t
    registry.set_compliance_rules(
        REGULATOR, 2025, "POWER", ComplianceRules(advance_use_bps=5_000), "borrowing allowed"
    )
    assert (
        surrender(registry, "S-ADVANCE-2", "PWR-A", UnitSelector(UnitType.CEA, 2026), 101)
        == "ADVANCE_USE_LIMIT_EXCEEDED"
    )
    assert surrender(registry, "S-ADVANCE-3", "PWR-A", UnitSelector(UnitType.CEA, 2026), 100) == ""
    assert (
        surrender(registry, "S-CEM-ADVANCE", "CEM-C", UnitSelector(UnitType.CEA, 2026), 1)
        == "ADVANCE_USE_NOT_ALLOWED"
    )  # the rule was for POWER only
    assert (
        surrender(registry, "S-UNVERIFIED", "PWR-A", CCER, 1, year=2026) == "EMISSIONS_NOT_VERIFIED"
    )
    # a refusal is recorded: the same id again answers the same refusal
    assert surrender(registry, "S-CCER-OVER", "PWR-A", CCER, 51) == "CCER_CAP_EXCEEDED"
    status = registry.get_compliance_status("PWR-A", 2025)
    assert (status.surrendered_ccer, status.surrendered_cea, status.advance_used) == (50, 100, 100)
    assert status.state is ComplianceState.OPEN and status.outstanding == 850


def test_closing_the_year_fixes_shortfalls_and_the_next_allocation_pays_them(
    year: Registry, clock: FakeClock
) -> None:
    """Closing fixes PWR-B's 300 t shortfall and orders it corrected by a deadline (10
    days here); the deadline passes; the deduction step carries the 300 t into 2026."""
    registry = year
    registry.set_compliance_rules(
        REGULATOR, 2025, "CEMENT", ComplianceRules(obligation_cap_bps=0), "capped at allocation"
    )
    registry.set_compliance_rules(  # the whole gap (1,000 - 800 = 200) may be borrowed
        REGULATOR, 2025, "POWER", ComplianceRules(advance_use_bps=10_000), "borrowing allowed"
    )
    assert surrender(registry, "S-A", "PWR-A", CEA, 1_000) == ""  # 800 of 2025, 200 of 2026
    assert surrender(registry, "S-B", "PWR-B", UnitSelector(UnitType.CEA, 2025), 700) == ""
    assert surrender(registry, "S-C", "CEM-C", UnitSelector(UnitType.CEA, 2025), 800) == ""
    report = {(line.sector, line.state): line for line in registry.compliance_report(2025)}
    assert report[("CEMENT", ComplianceState.COMPLIANT)].obligation == 800  # the cap
    assert report[("POWER", ComplianceState.OPEN)].accounts == 1

    closing = registry.close_compliance_year(
        REGULATOR, 2025, "deadline 2026-12-31 passed", correction_days=10
    )
    assert (closing.obligations_closed, closing.shortfalls, closing.shortfall_tonnes) == (3, 1, 300)
    assert closing.correction_deadline == "2026-06-25"  # the fake clock's 2026-06-15 + 10
    again = registry.close_compliance_year(REGULATOR, 2025, "clicked twice")
    assert again.replayed and again.shortfall_tonnes == 300
    status = registry.get_compliance_status("PWR-B", 2025)
    assert (status.state, status.shortfall) == (ComplianceState.SHORTFALL, 300)
    assert surrender(registry, "S-LATE-A", "PWR-A", CEA, 1) == "COMPLIANCE_YEAR_CLOSED"
    clock.advance(11 * 86_400)  # past the correction deadline: no late surrender now
    assert surrender(registry, "S-LATE", "PWR-B", CEA, 1) == "CORRECTION_DEADLINE_PASSED"
    run = registry.enforce_deductions(REGULATOR, 2025, "deadline 2026-06-25 passed")
    assert (run.deducted, run.deducted_tonnes, run.awaiting_deadline) == (1, 300, 0)
    assert surrender(registry, "S-LATER", "PWR-B", CEA, 1) == "COMPLIANCE_YEAR_CLOSED"
    with pytest.raises(ComplianceYearClosed):
        registry.set_compliance_rules(REGULATOR, 2025, "*", ComplianceRules(), "too late")
    with pytest.raises(ComplianceYearClosed):  # not even for an account never verified
        registry.record_verified_emissions(REGULATOR, [EmissionsRow("PWR-A", 2025, 1, "late")])
    report = {(line.sector, line.state): line for line in registry.compliance_report(2025)}
    assert report[("POWER", ComplianceState.SHORTFALL)].shortfall == 300
    assert report[("POWER", ComplianceState.COMPLIANT)].surrendered_cea == 1_000

    # 2026 pre-allocation: PWR-B's 300 are deducted, in two allocations
    first = registry.allocate(
        REGULATOR,
        "AL26-B-1",
        "PWR-B",
        UnitSelector(UnitType.CEA, 2026),
        200,
        "2026 pre-allocation",
        source="CN-ISSUANCE",
    )
    assert first.ok and first.quantity == 0
    second = registry.allocate(
        REGULATOR,
        "AL26-B-2",
        "PWR-B",
        UnitSelector(UnitType.CEA, 2026),
        500,
        "2026 top-up",
        source="CN-ISSUANCE",
    )
    assert second.ok and second.quantity == 400
    next_year = registry.get_compliance_status("PWR-B", 2026)
    assert (next_year.debt_carried, next_year.debt_deducted, next_year.allocated) == (300, 300, 700)
    held = {h.unit_class.vintage: h.available for h in registry.get_holdings("PWR-B")}
    assert held[2026] == 200 + 400
    assert_conserved(registry)


def test_bad_rules_are_refused_whole_and_change_nothing(registry: Registry) -> None:
    registry.open_account(
        REGULATOR,
        "PWR-X",
        AccountType.COMPLIANCE,
        Holder("X Co.", "91110000100001234X", "POWER", "Beijing"),
    )
    with pytest.raises(RowsInvalid) as raised:
        registry.set_compliance_rules(
            REGULATOR,
            2025,
            "POWER",
            ComplianceRules(ccer_cap_bps=20_000, surrender_deadline="soon"),
            "typo",
        )
    assert {v.field for v in raised.value.violations} == {
        "rules.ccer_cap_bps",
        "rules.surrender_deadline",
    }
    assert registry.get_compliance_rules(2025).rules == {}
    view = registry.set_compliance_rules(
        REGULATOR, 2025, "POWER", ComplianceRules(ccer_cap_bps=1_000), "plan"
    )
    assert view.for_sector("POWER").ccer_cap_bps == 1_000 and view.version == 2
    assert (
        registry.set_compliance_rules(
            REGULATOR, 2025, "POWER", ComplianceRules(ccer_cap_bps=1_000), "same again"
        ).position
        is None
    )


def test_a_return_the_account_cannot_cover_becomes_next_year_s_debt(year: Registry) -> None:
    registry = year
    registry.transfer(
        REGULATOR,
        "SOLD",
        "PWR-B",
        "PWR-A",
        UnitSelector(UnitType.CEA, 2025),
        700,
        "sold most of it",
    )  # PWR-B keeps 100 of 2025
    returned = registry.allocate_many(
        REGULATOR,
        [
            AllocationRow(
                "RET-B", "PWR-B", "CEA", 300, "true-up: output fell", vintage=2025, returned=True
            )
        ],
    )
    assert returned[0].outcome is RowOutcome.COMPLETED
    assert registry.get_transaction("mee", "RET-B").quantity == 100  # all it had
    status = registry.get_compliance_status("PWR-B", 2025)
    assert status.allocated == 800 - 300
    assert registry.get_compliance_status("PWR-B", 2026).debt_carried == 200
    held = {h.unit_class.vintage: h.available for h in registry.get_holdings("PWR-B")}
    assert held.get(2025, 0) == 0
    # the next year's allocation pays the debt first
    registry.allocate(
        REGULATOR,
        "AL26-B",
        "PWR-B",
        UnitSelector(UnitType.CEA, 2026),
        250,
        "2026 pre-allocation",
        source="CN-ISSUANCE",
    )
    assert registry.get_compliance_status("PWR-B", 2026).debt_deducted == 200
    assert_conserved(registry)


def test_reversals_undo_what_they_recorded_on_obligations(year: Registry, clock: FakeClock) -> None:
    registry = year
    registry.set_compliance_rules(  # the whole gap (1,000 - 800 = 200) may be borrowed
        REGULATOR, 2025, "POWER", ComplianceRules(advance_use_bps=10_000), "borrowing allowed"
    )
    # a surrender that used next year's allowances: the units and the advance use go back
    assert surrender(registry, "S-A", "PWR-A", CEA, 1_000) == ""  # 800 of 2025, 200 of 2026
    assert registry.get_compliance_status("PWR-A", 2025).advance_used == 200
    assert registry.reverse(REGULATOR, "R-S-A", "mee", "S-A", "surrendered in error").ok
    status = registry.get_compliance_status("PWR-A", 2025)
    assert (status.surrendered_cea, status.advance_used, status.outstanding) == (0, 0, 1_000)
    # a reversed allocation no longer counts towards the year (nor its obligation cap)
    assert registry.reverse(REGULATOR, "R-AL-C", "mee", "AL25-CEM-C", "wrong plant").ok
    assert registry.get_compliance_status("CEM-C", 2025).allocated == 0
    # once the year is closed its surrenders are final
    assert surrender(registry, "S-B", "PWR-B", UnitSelector(UnitType.CEA, 2025), 700) == ""
    registry.close_compliance_year(REGULATOR, 2025, "deadline passed")
    late = registry.reverse(REGULATOR, "R-S-B", "mee", "S-B", "too late")
    assert late.refusal_reason == "COMPLIANCE_YEAR_CLOSED"
    clock.advance(31 * 86_400)  # the default 30 days to correct pass uncorrected
    registry.enforce_deductions(REGULATOR, 2025, "correction deadline passed")
    # PWR-B's 300 t shortfall is paid by its 2026 allocation; reversing that allocation
    # makes the debt owed again and the allocation uncounted
    paid = registry.allocate(
        REGULATOR,
        "AL26-B",
        "PWR-B",
        UnitSelector(UnitType.CEA, 2026),
        500,
        "2026 pre-allocation",
        source="CN-ISSUANCE",
    )
    assert paid.ok and paid.quantity == 200
    assert registry.reverse(REGULATOR, "R-AL26-B", "mee", "AL26-B", "wrong table").ok
    next_year = registry.get_compliance_status("PWR-B", 2026)
    assert (next_year.allocated, next_year.debt_carried, next_year.debt_deducted) == (0, 300, 0)
    held = {h.unit_class.vintage: h.available for h in registry.get_holdings("PWR-B")}
    assert held[2026] == 200  # only what it held before
    assert_conserved(registry)


def test_a_reversed_return_restores_the_allocation_and_withdraws_its_debt(year: Registry) -> None:
    registry = year
    registry.transfer(
        REGULATOR,
        "SOLD",
        "PWR-B",
        "PWR-A",
        UnitSelector(UnitType.CEA, 2025),
        700,
        "sold most of it",
    )  # PWR-B keeps 100 of 2025
    give_back = [
        AllocationRow("RET-B", "PWR-B", "CEA", 300, "true-up", vintage=2025, returned=True)
    ]
    assert registry.allocate_many(REGULATOR, give_back)[0].outcome is RowOutcome.COMPLETED
    assert registry.reverse(REGULATOR, "R-RET-B", "mee", "RET-B", "output data wrong").ok
    assert registry.get_compliance_status("PWR-B", 2025).allocated == 800
    assert registry.get_compliance_status("PWR-B", 2026).debt_carried == 0
    # a return whose carried debt an allocation has paid stays until that is reversed
    again = [AllocationRow("RET-B2", "PWR-B", "CEA", 300, "true-up", vintage=2025, returned=True)]
    assert registry.allocate_many(REGULATOR, again)[0].outcome is RowOutcome.COMPLETED
    registry.allocate(
        REGULATOR,
        "AL26-B",
        "PWR-B",
        UnitSelector(UnitType.CEA, 2026),
        250,
        "2026 pre-allocation",
        source="CN-ISSUANCE",
    )  # pays the 200 t
    refused = registry.reverse(REGULATOR, "R-RET-B2", "mee", "RET-B2", "output data wrong")
    assert refused.refusal_reason == "TRANSACTION_NOT_REVERSIBLE"
    assert registry.reverse(REGULATOR, "R-AL26-B", "mee", "AL26-B", "wrong table").ok
    assert registry.reverse(REGULATOR, "R-RET-B2b", "mee", "RET-B2", "output data wrong").ok
    following = registry.get_compliance_status("PWR-B", 2026)
    assert (following.debt_carried, following.debt_deducted) == (0, 0)
    assert_conserved(registry)

"""Enforcement after a year closes short (Decree 775, Art. 24), through the application
on every backend: the notice with its correction deadline, late surrender inside and
after it, the fine, the deduction step, and a store closed by the previous version."""

from __future__ import annotations

import pytest

from registry.application import ComplianceState, EmissionsRow, Registry
from registry.application.unit_of_work import UnitOfWork
from registry.domain.enforcement import EnforcementStep
from registry.domain.errors import (
    ComplianceYearOpen,
    FineAlreadyRecorded,
    InvalidCommand,
    NoShortfall,
)
from registry.domain.obligations import ComplianceObligation
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import REGULATOR, FakeClock, assert_conserved, open_company

CEA25 = UnitSelector(UnitType.CEA, 2025)
CEA26 = UnitSelector(UnitType.CEA, 2026)
DAY = 86_400


def surrender(registry: Registry, txn: str, account: str, quantity: int) -> str:
    """Surrender 2025 CEA for 2025; the refusal reason, or "" when it completed."""
    result = registry.surrender(REGULATOR, txn, account, CEA25, quantity, 2025, "compliance")
    return result.refusal_reason


@pytest.fixture
def short(registry: Registry) -> Registry:
    """Three power companies, each verified at 1,000 t for 2025 and holding 1,000 t of
    2025 CEA: FULL surrenders 1,000, LATE and NEVER 700 each (300 t short)."""
    registry.issue_units(REGULATOR, "ISS-25", UnitClass(UnitType.CEA, 2025), 3_000, "")
    registry.issue_units(REGULATOR, "ISS-26", UnitClass(UnitType.CEA, 2026), 3_000, "")
    for account, surrendered in (("FULL", 1_000), ("LATE", 700), ("NEVER", 700)):
        open_company(registry, account)
        registry.allocate(
            REGULATOR, f"AL25-{account}", account, CEA25, 1_000, "2025", source="CN-ISSUANCE"
        )
        assert surrender(registry, f"S-{account}", account, surrendered) == ""
    registry.record_verified_emissions(
        REGULATOR, [EmissionsRow(a, 2025, 1_000, "report") for a in ("FULL", "LATE", "NEVER")]
    )
    return registry


def test_the_enforcement_order_from_notice_to_deduction(short: Registry, clock: FakeClock) -> None:
    """Closed on 2026-06-15 with 14 days to correct: deadline 2026-06-29. LATE
    surrenders its 300 t on 2026-06-29 (the last day): corrected, nothing deducted.
    NEVER surrenders nothing; on 2026-06-30 its surrender is refused and the deduction
    step carries its 300 t into 2026: a 2026 allocation of 1,000 t moves 700 t."""
    registry = short
    with pytest.raises(ComplianceYearOpen):
        registry.enforce_deductions(REGULATOR, 2025, "too early")
    closing = registry.close_compliance_year(REGULATOR, 2025, "deadline passed", correction_days=14)
    assert (closing.shortfalls, closing.shortfall_tonnes, closing.correction_deadline) == (
        2,
        600,
        "2026-06-29",
    )
    status = registry.get_compliance_status("NEVER", 2025)
    assert (status.state, status.enforcement_step, status.correction_deadline) == (
        ComplianceState.SHORTFALL,
        EnforcementStep.ORDERED_TO_CORRECT,
        "2026-06-29",
    )
    assert surrender(registry, "S-FULL-2", "FULL", 1) == "COMPLIANCE_YEAR_CLOSED"
    # inside the deadline nothing is deducted yet
    run = registry.enforce_deductions(REGULATOR, 2025, "too early")
    assert (run.deducted, run.awaiting_deadline, run.position) == (0, 2, None)

    clock.advance(14 * DAY)  # 2026-06-29, the deadline day
    assert surrender(registry, "S-LATE-2", "LATE", 300) == ""
    late = registry.get_compliance_status("LATE", 2025)
    assert (late.state, late.enforcement_step, late.surrendered_cea, late.shortfall) == (
        ComplianceState.COMPLIANT,
        EnforcementStep.CORRECTED,
        1_000,
        300,  # the shortfall fixed at closing stays on record
    )
    assert surrender(registry, "S-LATE-3", "LATE", 1) == "COMPLIANCE_YEAR_CLOSED"

    clock.advance(DAY)  # 2026-06-30: past the deadline
    assert surrender(registry, "S-NEVER-2", "NEVER", 300) == "CORRECTION_DEADLINE_PASSED"
    overdue = registry.get_compliance_status("NEVER", 2025)
    assert (overdue.enforcement_step, overdue.shortfall_remaining) == (
        EnforcementStep.CORRECTION_OVERDUE,
        300,
    )
    run = registry.enforce_deductions(REGULATOR, 2025, "correction deadline 2026-06-29 passed")
    assert (run.deducted, run.deducted_tonnes, run.awaiting_deadline) == (1, 300, 0)
    again = registry.enforce_deductions(REGULATOR, 2025, "clicked twice")
    assert (again.deducted, again.position) == (0, None)
    never = registry.get_compliance_status("NEVER", 2025)
    assert (never.enforcement_step, never.carried_forward, never.shortfall_remaining) == (
        EnforcementStep.DEBT_CARRIED,
        300,
        0,
    )
    assert registry.get_compliance_status("LATE", 2026).debt_carried == 0
    allocation = registry.allocate(
        REGULATOR, "AL26-NEVER", "NEVER", CEA26, 1_000, "2026", source="CN-ISSUANCE"
    )
    assert allocation.ok and allocation.quantity == 700
    following = registry.get_compliance_status("NEVER", 2026)
    assert (following.debt_carried, following.debt_deducted) == (300, 300)
    assert_conserved(registry)


def test_a_fine_is_recorded_as_data(short: Registry) -> None:
    """NEVER is 300 t short; multiple 6, reference price 95.20 CNY/t:
    95.20 x 300 = 28,560.00; x 6 = 171,360.00 CNY."""
    registry = short
    with pytest.raises(ComplianceYearOpen):
        registry.record_compliance_fine(REGULATOR, "NEVER", 2025, "6", "95.20", "too early")
    registry.close_compliance_year(REGULATOR, 2025, "deadline passed")
    fine = registry.record_compliance_fine(REGULATOR, "NEVER", 2025, "6", "95.20", "order 17")
    assert (fine.quantity, fine.amount, fine.replayed) == (300, "171360.00", False)
    again = registry.record_compliance_fine(REGULATOR, "NEVER", 2025, "6", "95.20", "again")
    assert again.replayed and again.position is None
    with pytest.raises(FineAlreadyRecorded):
        registry.record_compliance_fine(REGULATOR, "NEVER", 2025, "7", "95.20", "another")
    with pytest.raises(NoShortfall):
        registry.record_compliance_fine(REGULATOR, "FULL", 2025, "6", "95.20", "compliant")
    for multiple, price, reason in (
        ("11", "95.20", "INVALID_FINE_MULTIPLE"),
        ("6", "0", "INVALID_REFERENCE_PRICE"),
    ):
        with pytest.raises(InvalidCommand) as raised:
            registry.record_compliance_fine(REGULATOR, "NEVER", 2025, multiple, price, "bad")
        assert raised.value.reason == reason
    status = registry.get_compliance_status("NEVER", 2025)
    assert status.fine is not None and status.fine["amount"] == "171360.00"


def test_bad_correction_days_are_refused_and_change_nothing(short: Registry) -> None:
    registry = short
    with pytest.raises(InvalidCommand) as raised:
        registry.close_compliance_year(REGULATOR, 2025, "deadline", correction_days=0)
    assert raised.value.reason == "INVALID_CORRECTION_DAYS"
    assert not registry.get_compliance_rules(2025).closed


def test_a_year_closed_by_the_previous_version_still_means_immediate_deduction(
    short: Registry, clock: FakeClock
) -> None:
    """The previous version's closing wrote, in one save, ``Closed`` with the shortfall
    on each obligation and ``DebtCarried`` on the next year's. Such a store loads as
    DEBT_CARRIED: no late surrender, nothing for the deduction step to do, and the next
    allocation pays the debt."""
    registry = short

    def old_closing(uow: UnitOfWork) -> None:
        for account, surrendered in (("FULL", 1_000), ("LATE", 700), ("NEVER", 700)):
            found = uow.find(ComplianceObligation.id_for(account, 2025), ComplianceObligation)
            assert found is not None
            shortfall = 1_000 - surrendered
            found.trigger_event(
                ComplianceObligation.Closed,
                obligation=1_000,
                surrendered=surrendered,
                shortfall=shortfall,
                principal="mee/regulator",
            )
            if shortfall:
                uow.obligation(account, 2026).carry_debt(2025, shortfall)
        uow.compliance_year(2025).close("mee/regulator", "closed by the previous version")
        uow.save()

    registry.store.retrying(old_closing)
    status = registry.get_compliance_status("LATE", 2025)
    assert (status.state, status.shortfall, status.enforcement_step) == (
        ComplianceState.SHORTFALL,
        300,
        EnforcementStep.DEBT_CARRIED,
    )
    assert (status.correction_deadline, status.carried_forward) == ("", 300)
    assert registry.get_compliance_status("FULL", 2025).enforcement_step is EnforcementStep.NONE
    assert surrender(registry, "S-LATE-2", "LATE", 300) == "COMPLIANCE_YEAR_CLOSED"
    clock.advance(365 * DAY)
    run = registry.enforce_deductions(REGULATOR, 2025, "nothing to do")
    assert (run.deducted, run.awaiting_deadline) == (0, 0)
    closing = registry.close_compliance_year(REGULATOR, 2025, "again")
    assert closing.replayed and (closing.shortfalls, closing.shortfall_tonnes) == (2, 600)
    paid = registry.allocate(REGULATOR, "AL26-LATE", "LATE", CEA26, 1_000, "2026", "CN-ISSUANCE")
    assert paid.ok and paid.quantity == 700
    assert registry.get_compliance_status("LATE", 2026).debt_deducted == 300

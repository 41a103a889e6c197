"""Reversing an allocation that asked for no vintage and that a carried debt took
whole: it moved no blocks, so only the year recorded on its transaction tells which
year's debt it paid (docs/compliance.md, "Reversals and obligations"). Through the
application on every backend, and with a transaction written before the year was
recorded."""

from __future__ import annotations

import pytest

from registry.application import EmissionsRow, Registry
from registry.application.unit_of_work import UnitOfWork
from registry.domain.transactions import Principal, Transaction, TransactionKind
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import REGULATOR, FakeClock, assert_conserved, open_company

CEA25 = UnitSelector(UnitType.CEA, 2025)
CEA26 = UnitSelector(UnitType.CEA, 2026)
ANY_CEA = UnitSelector(UnitType.CEA, None)
DAY = 86_400


@pytest.fixture
def indebted(registry: Registry, clock: FakeClock) -> Registry:
    """DEBTOR is given 1,000 t of 2025 CEA (all of the 2025 issuance), surrenders 700
    t, is verified at 1,000 t: 300 t short. Closed with 14 days to correct, nothing
    corrected, the deduction step after the deadline carries 300 t of debt into 2026.
    The issuance account then holds only 2026 CEA (1,000 t)."""
    registry.issue_units(REGULATOR, "ISS-25", UnitClass(UnitType.CEA, 2025), 1_000, "")
    registry.issue_units(REGULATOR, "ISS-26", UnitClass(UnitType.CEA, 2026), 1_000, "")
    open_company(registry, "DEBTOR")
    assert registry.allocate(REGULATOR, "AL25", "DEBTOR", CEA25, 1_000, "2025", "CN-ISSUANCE").ok
    assert registry.surrender(REGULATOR, "S25", "DEBTOR", CEA25, 700, 2025, "compliance").ok
    registry.record_verified_emissions(REGULATOR, [EmissionsRow("DEBTOR", 2025, 1_000, "v")])
    registry.close_compliance_year(REGULATOR, 2025, "deadline passed", correction_days=14)
    clock.advance(15 * DAY)
    assert registry.enforce_deductions(REGULATOR, 2025, "not corrected").deducted == 1
    assert registry.get_compliance_status("DEBTOR", 2026).debt_carried == 300
    return registry


def test_reversing_an_allocation_the_debt_took_whole_owes_the_debt_again(
    indebted: Registry,
) -> None:
    """No vintage asked, 200 t: the oldest CEA the issuance account holds is 2026, so
    it counts towards 2026, whose 300 t debt takes all 200 t (no blocks move; 100 t
    still owed). Reversed: 2026 allocated 200 -> 0, debt deducted 200 -> 0 (300 t owed
    again). A 2026 allocation of 1,000 t then moves 1,000 - 300 = 700 t."""
    registry = indebted
    paid = registry.allocate(REGULATOR, "AL-ANY", "DEBTOR", ANY_CEA, 200, "2026", "CN-ISSUANCE")
    assert paid.ok and paid.quantity == 0
    assert paid.details["compliance_year"] == 2026
    status = registry.get_compliance_status("DEBTOR", 2026)
    assert (status.allocated, status.debt_deducted) == (200, 200)

    reversal = registry.reverse(REGULATOR, "REV-ANY", "mee", "AL-ANY", "wrong account")
    assert reversal.ok, reversal.refusal_message
    status = registry.get_compliance_status("DEBTOR", 2026)
    assert (status.allocated, status.debt_carried, status.debt_deducted) == (0, 300, 0)
    assert registry.get_transaction("mee", "AL-ANY").reversed

    again = registry.allocate(REGULATOR, "AL26", "DEBTOR", CEA26, 1_000, "2026", "CN-ISSUANCE")
    assert again.ok and again.quantity == 700
    assert registry.get_compliance_status("DEBTOR", 2026).debt_deducted == 300
    assert_conserved(registry)


def test_an_allocation_with_a_vintage_records_no_year_of_its_own(indebted: Registry) -> None:
    """The vintage asked is the year: nothing more is recorded (the record as before)."""
    paid = indebted.allocate(REGULATOR, "AL26", "DEBTOR", CEA26, 100, "2026", "CN-ISSUANCE")
    assert paid.ok and paid.quantity == 0
    assert "compliance_year" not in paid.details


def test_such_an_allocation_recorded_before_the_year_was_kept_is_refused_reversal(
    indebted: Registry,
) -> None:
    """The previous version wrote, in one save, the completed allocation (no year in
    its details, no blocks) and ``DebtDeducted`` + ``AllocationRecorded`` of 200 t on
    DEBTOR's 2026 obligation. It still loads and projects; its reversal is refused
    (TRANSACTION_NOT_REVERSIBLE) and changes nothing: 2026 stays allocated 200, debt
    deducted 200."""
    registry = indebted
    txn_id = Transaction.id_for("mee", "AL-OLD")

    def old_allocation(uow: UnitOfWork) -> None:
        uow.add(
            Transaction.complete(
                party="mee",
                client_id="AL-OLD",
                kind=TransactionKind.ALLOCATION,
                source="CN-ISSUANCE",
                destination="DEBTOR",
                blocks=[],
                reason="2026",
                principal=Principal("mee", "regulator"),
                fingerprint="old",
                details={"quantity": 200, "selector": ANY_CEA.as_dict()},
            )
        )
        obligation = uow.obligation("DEBTOR", 2026)
        obligation.deduct_debt(txn_id, 200)
        obligation.record_allocation(txn_id, 200)
        uow.save()

    registry.store.retrying(old_allocation)
    old = registry.get_transaction("mee", "AL-OLD")
    assert old.ok and old.quantity == 0 and "compliance_year" not in old.details

    refused = registry.reverse(REGULATOR, "REV-OLD", "mee", "AL-OLD", "wrong account")
    assert refused.refusal_reason == "TRANSACTION_NOT_REVERSIBLE"
    assert "AL-OLD" in refused.refusal_message
    status = registry.get_compliance_status("DEBTOR", 2026)
    assert (status.allocated, status.debt_deducted) == (200, 200)
    assert not registry.get_transaction("mee", "AL-OLD").reversed
    assert_conserved(registry)

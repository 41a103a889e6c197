"""Enforcement of a shortfall in the order of Decree 775, Art. 24: notice with a
correction deadline, late surrender until then, a fine recorded, then deduction.
Worked examples on the obligation itself; no I/O."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import uuid4

import pytest
from eventsourcing.domain import Snapshot

from registry.application.results import ComplianceState, ComplianceView
from registry.domain.enforcement import (
    DEFAULT_CORRECTION_DAYS,
    EnforcementStep,
    Fine,
    check_correction_days,
    correction_deadline,
)
from registry.domain.errors import (
    ComplianceYearClosed,
    CorrectionDeadlinePassed,
    FineAlreadyRecorded,
    InvalidCommand,
    NoShortfall,
)
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import DEFAULT_RULES

DEADLINE = date(2026, 6, 25)


def short_300() -> ComplianceObligation:
    """Verified 1,000 t, surrendered 700 t, closed with a 2026-06-25 deadline: 300 short."""
    o = ComplianceObligation.start("PWR-0001", 2025)
    o.record_emissions(1_000, "verification report", "mee/li")
    o.record_surrender(uuid4(), "CEA", 700)
    assert o.close(DEFAULT_RULES, "mee/li", DEADLINE) == 300
    return o


def view(o: ComplianceObligation, today: date) -> ComplianceView:
    return ComplianceView.of("PWR-0001", 2025, o, DEFAULT_RULES, True, today)


def test_closing_short_notifies_instead_of_deducting() -> None:
    o = short_300()
    (notice,) = [
        e for e in o.collect_events() if isinstance(e, ComplianceObligation.ShortfallNotified)
    ]
    assert (notice.obligation, notice.surrendered, notice.shortfall) == (1_000, 700, 300)
    assert notice.correction_deadline == "2026-06-25"
    assert not o.closed and o.correcting and o.remaining_shortfall == 300
    v = view(o, DEADLINE)
    assert (v.state, v.shortfall, v.enforcement_step) == (
        ComplianceState.SHORTFALL,
        300,
        EnforcementStep.ORDERED_TO_CORRECT,
    )
    assert (v.correction_deadline, v.shortfall_remaining, v.carried_forward) == (
        "2026-06-25",
        300,
        0,
    )


def test_closing_without_a_shortfall_closes_as_before() -> None:
    o = ComplianceObligation.start("PWR-0002", 2025)
    o.record_emissions(500, "report", "mee/li")
    o.record_surrender(uuid4(), "CEA", 500)
    assert o.close(DEFAULT_RULES, "mee/li", DEADLINE) == 0
    assert o.closed and o.enforcement == EnforcementStep.NONE
    with pytest.raises(ComplianceYearClosed) as raised:
        o.ensure_accepts_late_surrender(DEADLINE)
    assert "no shortfall to correct" in raised.value.message


def test_late_surrender_inside_the_deadline_corrects_the_shortfall() -> None:
    """300 t short: 200 t on 2026-06-20 leave 1,000 - 900 = 100 t; 100 t on the
    deadline day itself (2026-06-25) meet the noticed 1,000 t: corrected, nothing to
    deduct, and a further late surrender finds the year closed."""
    o = short_300()
    o.ensure_accepts_late_surrender(date(2026, 6, 20))
    o.record_late_surrender(uuid4(), "CEA", 200)
    assert (o.correcting, o.remaining_shortfall) == (True, 100)
    o.ensure_accepts_late_surrender(DEADLINE)  # the deadline day still counts
    o.record_late_surrender(uuid4(), "CEA", 100)
    assert o.closed and o.enforcement == EnforcementStep.CORRECTED
    v = view(o, date(2026, 7, 1))
    assert (v.state, v.enforcement_step, v.shortfall_remaining, v.surrendered_cea) == (
        ComplianceState.COMPLIANT,
        EnforcementStep.CORRECTED,
        0,
        1_000,
    )
    assert o.deduct_shortfall(date(2026, 7, 1), "mee/li", "deadline passed") == 0
    with pytest.raises(ComplianceYearClosed) as raised:
        o.ensure_accepts_late_surrender(DEADLINE)
    assert "was corrected" in raised.value.message


def test_late_surrender_after_the_deadline_is_refused_and_the_rest_deducted() -> None:
    """300 t short; 50 t late on 2026-06-24 leave 250 t. On 2026-06-26 (one day past
    the deadline) a surrender is refused CORRECTION_DEADLINE_PASSED naming the 250 t;
    the deduction step carries exactly those 250 t."""
    o = short_300()
    o.record_late_surrender(uuid4(), "CEA", 50)
    late = date(2026, 6, 26)
    assert view(o, late).enforcement_step is EnforcementStep.CORRECTION_OVERDUE
    with pytest.raises(CorrectionDeadlinePassed) as raised:
        o.ensure_accepts_late_surrender(late)
    assert raised.value.reason == "CORRECTION_DEADLINE_PASSED"
    assert raised.value.metadata["correction_deadline"] == "2026-06-25"
    assert raised.value.metadata["remaining"] == "250"
    assert o.deduct_shortfall(DEADLINE, "mee/li", "too early") == 0  # not before it passes
    assert o.correcting
    assert o.deduct_shortfall(late, "mee/li", "deadline passed") == 250
    assert o.closed and o.carried_forward == 250
    assert view(o, late).enforcement_step is EnforcementStep.DEBT_CARRIED
    assert o.deduct_shortfall(late, "mee/li", "again") == 0  # once
    with pytest.raises(ComplianceYearClosed) as raised:
        o.ensure_accepts_late_surrender(late)
    assert "deducted from 2026" in raised.value.message


def test_surrenders_under_a_notice_are_final() -> None:
    o = short_300()
    with pytest.raises(ComplianceYearClosed):
        o.ensure_fixed()


def test_the_fine_is_multiple_times_price_times_the_tonnes_short() -> None:
    """300 t short at closing, multiple 7.5, reference price 97.49 CNY/t:
    97.49 x 300 = 29,247.00; x 7.5 = 219,352.50 CNY. The quantity is the shortfall at
    closing, not what is left after late surrender (here 100 t surrendered late)."""
    o = short_300()
    o.record_late_surrender(uuid4(), "CEA", 100)
    assert o.record_fine("7.5", "97.49", "mee/li", "order 2026-17")
    assert o.fine is not None
    assert (o.fine["quantity"], o.fine["amount"]) == (300, "219352.50")
    assert not o.record_fine("7.5", "97.49", "mee/wang", "sent twice")  # a replay
    with pytest.raises(FineAlreadyRecorded):
        o.record_fine("8", "97.49", "mee/li", "another")
    assert view(o, DEADLINE).fine == {
        "multiple": "7.5",
        "reference_price": "97.49",
        "quantity": 300,
        "amount": "219352.50",
        "principal": "mee/li",
        "reason": "order 2026-17",
    }


def test_fine_amounts_by_hand() -> None:
    """5 x 80.00 x 1,000 = 400,000.00; 10 x 0.01 x 1 = 0.10; 5.25 x 10.01 x 1 =
    52.5525, to the fen 52.55; 5.5 x 0.01 x 1 = 0.055, half a fen up: 0.06."""
    assert Fine.of("5", "80.00", 1_000).amount == Decimal("400000.00")
    assert Fine.of("10", "0.01", 1).amount == Decimal("0.10")
    assert Fine.of("5.25", "10.01", 1).amount == Decimal("52.55")
    assert Fine.of("5.5", "0.01", 1).amount == Decimal("0.06")


@pytest.mark.parametrize(
    ("multiple", "price", "reason", "field"),
    [
        ("4.99", "50", "INVALID_FINE_MULTIPLE", "multiple"),
        ("10.01", "50", "INVALID_FINE_MULTIPLE", "multiple"),
        ("7.125", "50", "INVALID_FINE_MULTIPLE", "multiple"),
        ("seven", "50", "INVALID_FINE_MULTIPLE", "multiple"),
        (" 7", "50", "INVALID_FINE_MULTIPLE", "multiple"),
        ("NaN", "50", "INVALID_FINE_MULTIPLE", "multiple"),
        ("7", "0", "INVALID_REFERENCE_PRICE", "reference_price"),
        ("7", "-1", "INVALID_REFERENCE_PRICE", "reference_price"),
        ("7", "97.491", "INVALID_REFERENCE_PRICE", "reference_price"),
        ("7", "", "INVALID_REFERENCE_PRICE", "reference_price"),
        ("7", "1e3", "INVALID_REFERENCE_PRICE", "reference_price"),
        ("\uff15", "50", "INVALID_FINE_MULTIPLE", "multiple"),  # a full-width 5
        ("7", "1,000", "INVALID_REFERENCE_PRICE", "reference_price"),
    ],
)
def test_bad_fine_figures_are_named(multiple: str, price: str, reason: str, field: str) -> None:
    with pytest.raises(InvalidCommand) as raised:
        Fine.of(multiple, price, 300)
    assert (raised.value.reason, raised.value.metadata["field"]) == (reason, field)


def test_no_fine_without_a_shortfall() -> None:
    o = ComplianceObligation.start("PWR-0002", 2025)
    o.record_emissions(500, "report", "mee/li")
    o.record_surrender(uuid4(), "CEA", 500)
    o.close(DEFAULT_RULES, "mee/li", DEADLINE)
    with pytest.raises(NoShortfall):
        o.record_fine("5", "90", "mee/li", "order")


def test_correction_days_are_a_parameter_with_a_default() -> None:
    assert check_correction_days(None) == DEFAULT_CORRECTION_DAYS == 30
    assert check_correction_days(1) == 1 and check_correction_days(365) == 365
    for bad in (0, 366, -5, True, "30"):
        with pytest.raises(InvalidCommand) as raised:
            check_correction_days(bad)  # type: ignore[arg-type]
        assert raised.value.reason == "INVALID_CORRECTION_DAYS"
    assert correction_deadline(date(2026, 12, 31), 30) == date(2027, 1, 30)


def test_an_obligation_closed_by_the_previous_version_means_immediate_deduction() -> None:
    """The previous version wrote ``Closed`` with the shortfall and carried it into the
    next year at once: read now, that is DEBT_CARRIED, with no late surrender."""
    o = ComplianceObligation.start("PWR-0001", 2025)
    o.record_emissions(1_000, "report", "mee/li")
    o.record_surrender(uuid4(), "CEA", 700)
    o.trigger_event(  # exactly what the previous close() wrote
        ComplianceObligation.Closed, obligation=1_000, surrendered=700, shortfall=300, principal="p"
    )
    assert o.closed and not o.correcting and o.carried_forward == 300
    v = view(o, DEADLINE)
    assert (v.state, v.shortfall, v.enforcement_step, v.correction_deadline) == (
        ComplianceState.SHORTFALL,
        300,
        EnforcementStep.DEBT_CARRIED,
        "",
    )
    with pytest.raises(ComplianceYearClosed):
        o.ensure_accepts_late_surrender(DEADLINE)
    assert o.record_fine("5", "90", "mee/li", "order")  # its shortfall can still be fined


def test_snapshots_keep_the_enforcement_state_and_old_ones_restore() -> None:
    o = short_300()
    restored = Snapshot.take(o).mutate(None)
    assert isinstance(restored, ComplianceObligation)
    assert restored.correcting and restored.correction_deadline == "2026-06-25"
    assert restored.enforcement_step(DEADLINE) is EnforcementStep.ORDERED_TO_CORRECT
    old = Snapshot.take(ComplianceObligation.start("PWR-0003", 2025))
    for name in ("enforcement", "correction_deadline", "noticed_obligation", "fine"):
        old.state.pop(name, None)  # a snapshot taken before these existed
    before = old.mutate(None)
    assert isinstance(before, ComplianceObligation)
    assert before.enforcement_step(DEADLINE) is EnforcementStep.NONE and before.fine is None


def test_the_event_topics_are_stable() -> None:
    events = ComplianceObligation
    assert [
        events.ShortfallNotified.TOPIC,
        events.ShortfallCorrected.TOPIC,
        events.ShortfallDeducted.TOPIC,
        events.FineRecorded.TOPIC,
    ] == [
        "registry.ComplianceObligation.ShortfallNotified",
        "registry.ComplianceObligation.ShortfallCorrected",
        "registry.ComplianceObligation.ShortfallDeducted",
        "registry.ComplianceObligation.FineRecorded",
    ]

"""Compliance obligation: verified emissions and the status derived from them. No I/O."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.domain import Snapshot

from registry.application.results import ComplianceState, ComplianceView
from registry.domain.errors import InvalidCommand
from registry.domain.obligations import ComplianceObligation


def obligation() -> ComplianceObligation:
    return ComplianceObligation.start("PWR-0001", 2025)


def test_first_figure_and_a_correction_are_events_the_same_figure_is_not() -> None:
    o = obligation()
    assert o.verified_emissions is None
    assert o.record_emissions(9_000_000, "verifier report", "mee/li")
    assert not o.record_emissions(9_000_000, "uploaded twice", "mee/li")
    assert o.record_emissions(8_950_000, "corrected by verifier", "mee/wang")
    events = [
        e for e in o.collect_events() if isinstance(e, ComplianceObligation.EmissionsVerified)
    ]
    assert [(e.emissions, e.reason, e.principal) for e in events] == [
        (9_000_000, "verifier report", "mee/li"),
        (8_950_000, "corrected by verifier", "mee/wang"),
    ]
    assert o.verified_emissions == 8_950_000


def test_zero_is_a_figure_negative_or_fractional_is_not() -> None:
    o = obligation()
    assert o.record_emissions(0, "plant idle all year", "mee/li")
    assert o.verified_emissions == 0
    for bad in (-1, 1.5, True, "100"):
        with pytest.raises(InvalidCommand) as raised:
            o.record_emissions(bad, "x", "mee/li")  # type: ignore[arg-type]
        assert raised.value.reason == "INVALID_EMISSIONS"


def test_the_event_topic_is_stable() -> None:
    assert (
        ComplianceObligation.EmissionsVerified.TOPIC
        == "registry.ComplianceObligation.EmissionsVerified"
    )


def test_snapshot_round_trip_keeps_the_figure() -> None:
    o = obligation()
    o.record_emissions(123, "r", "p")
    o.record_surrender(uuid4(), "CEA", 100)
    restored = Snapshot.take(o).mutate(None)
    assert isinstance(restored, ComplianceObligation)
    assert restored.verified_emissions == 123 and restored.surrendered == {"CEA": 100}


def status(o: ComplianceObligation | None) -> ComplianceView:
    return ComplianceView.of("PWR-0001", 2025, o)


def test_status_follows_verified_emissions_and_surrenders() -> None:
    assert status(None) == ComplianceView(
        "PWR-0001", 2025, ComplianceState.NOT_VERIFIED, None, 0, 0, 0, 0
    )
    o = obligation()
    o.record_surrender(uuid4(), "CEA", 500)
    assert status(o).state is ComplianceState.NOT_VERIFIED
    assert status(o).surrendered_cea == 500
    o.record_emissions(1000, "report", "mee/li")
    # no allocation: the gap is the whole obligation; CCER up to 5 % of it (50 t)
    assert status(o) == ComplianceView(
        "PWR-0001",
        2025,
        ComplianceState.OPEN,
        1000,
        1000,
        500,
        0,
        500,
        ccer_cap=50,
        ccer_remaining=50,
        gap=1000,
    )
    o.record_surrender(uuid4(), "CCER", 500)
    assert status(o) == ComplianceView(
        "PWR-0001",
        2025,
        ComplianceState.COMPLIANT,
        1000,
        1000,
        500,
        500,
        0,
        ccer_cap=50,
        ccer_remaining=0,
        gap=1000,
    )
    o.record_emissions(900, "correction", "mee/li")
    assert (status(o).state, status(o).outstanding) == (ComplianceState.COMPLIANT, 0)
    o.reverse_surrender(uuid4(), "CCER", 500)
    assert (status(o).state, status(o).outstanding) == (ComplianceState.OPEN, 400)


def test_zero_emissions_is_compliant_without_surrendering() -> None:
    o = obligation()
    o.record_emissions(0, "idle", "mee/li")
    assert status(o).state is ComplianceState.COMPLIANT

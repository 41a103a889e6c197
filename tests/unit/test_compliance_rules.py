"""Compliance rules as data, and an obligation judged by them. No I/O."""

from __future__ import annotations

from datetime import date
from uuid import uuid4

import pytest
from eventsourcing.domain import Snapshot

from registry.domain.errors import (
    AdvanceUseLimitExceeded,
    AdvanceUseNotAllowed,
    CcerCapExceeded,
    ComplianceYearClosed,
    EmissionsNotVerified,
    IneligibleVintage,
    InvalidCommand,
    RowsInvalid,
)
from registry.domain.obligations import ComplianceObligation, ComplianceStatus
from registry.domain.rules import DEFAULT_RULES, ComplianceRules, ComplianceYear, share
from registry.domain.units import SerialBlock, UnitClass, UnitType


def cea(vintage: int, quantity: int, first: int = 1) -> SerialBlock:
    return SerialBlock(UnitClass(UnitType.CEA, vintage), first, first + quantity - 1)


def ccer(quantity: int, first: int = 1) -> SerialBlock:
    return SerialBlock(UnitClass(UnitType.CCER, 2024, "P-0001"), first, first + quantity - 1)


def verified(tonnes: int, year: int = 2025) -> ComplianceObligation:
    obligation = ComplianceObligation.start("PWR-0001", year)
    obligation.record_emissions(tonnes, "verifier report", "mee/li")
    return obligation


def test_shares_are_basis_points_rounded_down_to_whole_tonnes() -> None:
    assert share(1_000_001, 500) == 50_000
    assert share(19, 500) == 0
    assert DEFAULT_RULES.ccer_cap_bps == 500 and DEFAULT_RULES.advance_use_bps == 0


def test_the_obligation_cap_is_allocation_plus_a_share_of_verified_emissions() -> None:
    power_early = ComplianceRules(obligation_cap_bps=2_000)
    gas = ComplianceRules(obligation_cap_bps=0)
    assert DEFAULT_RULES.obligation(1_000, 500) == 1_000
    assert power_early.obligation(1_000, 500) == 700  # 500 + 20 % of 1,000
    assert power_early.obligation(1_000, 900) == 1_000  # never above verified
    assert gas.obligation(1_000, 600) == 600  # capped at the allocation


def test_every_bad_rule_field_is_named() -> None:
    bad = ComplianceRules(
        ccer_cap_bps=10_001,
        advance_use_bps=-1,
        cea_min_vintage=2030,
        surrender_deadline="2025-12-31",
        obligation_cap_bps=True,
    )
    with pytest.raises(RowsInvalid) as raised:
        bad.check(2025)
    assert raised.value.reason == "INVALID_RULE"
    assert {v.field for v in raised.value.violations} == {
        "rules.ccer_cap_bps",
        "rules.advance_use_bps",
        "rules.cea_min_vintage",
        "rules.surrender_deadline",
        "rules.obligation_cap_bps",
    }
    assert ComplianceRules(surrender_deadline="2026-12-31").check(2025).deadline(2025).year == 2026


def test_rules_by_sector_fall_back_to_the_year_then_to_the_defaults() -> None:
    year = ComplianceYear.start(2025)
    assert year.rules_for("STEEL") == DEFAULT_RULES
    assert year.change_rules("*", ComplianceRules(ccer_cap_bps=300), "mee/li", "2025 plan")
    relief = ComplianceRules(obligation_cap_bps=2_000)
    assert year.change_rules("POWER", relief, "mee/li", "relief")
    assert not year.change_rules("POWER", relief, "mee/wang", "again")
    assert year.rules_for("STEEL").ccer_cap_bps == 300
    assert year.rules_for("POWER").obligation_cap_bps == 2_000
    changes = [e for e in year.collect_events() if isinstance(e, ComplianceYear.RulesChanged)]
    assert [(e.sector, e.principal, e.reason) for e in changes] == [
        ("*", "mee/li", "2025 plan"),
        ("POWER", "mee/li", "relief"),
    ]
    with pytest.raises(InvalidCommand) as raised:
        year.change_rules("SHIPPING", DEFAULT_RULES, "mee/li", "x")
    assert raised.value.reason == "INVALID_SECTOR"


def test_a_closed_year_changes_no_more() -> None:
    year = ComplianceYear.start(2025)
    year.close("mee/li", "deadline passed")
    with pytest.raises(ComplianceYearClosed):
        year.change_rules("*", ComplianceRules(ccer_cap_bps=1_000), "mee/li", "too late")
    with pytest.raises(ComplianceYearClosed):
        year.close("mee/li", "again")
    restored = Snapshot.take(year).mutate(None)
    assert isinstance(restored, ComplianceYear) and restored.closed


def test_vintages_accepted_and_advance_use() -> None:
    obligation = verified(10_000)
    assert obligation.check_surrender(DEFAULT_RULES, [cea(2025, 100), cea(2019, 100)]) == 0
    with pytest.raises(IneligibleVintage) as raised:
        obligation.check_surrender(DEFAULT_RULES, [cea(2027, 1)])
    assert raised.value.metadata["vintage"] == "2027"
    with pytest.raises(IneligibleVintage):
        obligation.check_surrender(ComplianceRules(cea_min_vintage=2021), [cea(2020, 1)])
    with pytest.raises(AdvanceUseNotAllowed):
        obligation.check_surrender(DEFAULT_RULES, [cea(2026, 1)])
    borrowing = ComplianceRules(advance_use_bps=1_000)  # up to 1,000 t
    assert obligation.check_surrender(borrowing, [cea(2025, 5), cea(2026, 600)]) == 600
    obligation.record_surrender(uuid4(), "CEA", 605, advance=600)
    with pytest.raises(AdvanceUseLimitExceeded) as limit:
        obligation.check_surrender(borrowing, [cea(2026, 401)])
    assert limit.value.metadata["limit"] == "1000"
    assert obligation.check_surrender(borrowing, [cea(2026, 400)]) == 400


def test_offsets_are_capped_by_verified_emissions() -> None:
    obligation = verified(10_000)  # cap: 500 t
    obligation.check_surrender(DEFAULT_RULES, [ccer(500)])
    obligation.record_surrender(uuid4(), "CCER", 300)
    with pytest.raises(CcerCapExceeded) as raised:
        obligation.check_surrender(DEFAULT_RULES, [ccer(201)])
    assert raised.value.metadata == {"limit": "500", "surrendered": "300", "requested": "201"}
    with pytest.raises(EmissionsNotVerified):
        ComplianceObligation.start("PWR-0002", 2025).check_surrender(DEFAULT_RULES, [ccer(1)])


def test_status_through_the_year_and_the_shortfall_fixed_at_closing() -> None:
    rules = DEFAULT_RULES
    unverified = ComplianceObligation.start("PWR-0002", 2025)
    assert unverified.status(rules) is ComplianceStatus.NOT_VERIFIED
    assert unverified.close(rules, "mee/li", date(2026, 6, 25)) == 0
    assert unverified.status(rules) is ComplianceStatus.NOT_VERIFIED

    obligation = verified(1_000)
    assert obligation.status(rules) is ComplianceStatus.OPEN
    obligation.record_surrender(uuid4(), "CEA", 700)
    assert obligation.status(rules, year_closed=True) is ComplianceStatus.SHORTFALL
    assert obligation.close(rules, "mee/li", date(2026, 6, 25)) == 300
    assert obligation.correcting and obligation.shortfall == 300  # ordered to correct
    assert obligation.status(rules) is ComplianceStatus.SHORTFALL
    with pytest.raises(ComplianceYearClosed):
        obligation.record_emissions(900, "late correction", "mee/li")
    assert obligation.deduct_shortfall(date(2026, 6, 26), "mee/li", "not corrected") == 300
    assert obligation.closed and obligation.status(rules) is ComplianceStatus.SHORTFALL
    with pytest.raises(ComplianceYearClosed):
        obligation.check_surrender(rules, [cea(2025, 1)])
    with pytest.raises(ComplianceYearClosed):
        obligation.record_emissions(900, "late correction", "mee/li")

    compliant = verified(1_000)
    compliant.record_allocation(uuid4(), 900)
    compliant.record_surrender(uuid4(), "CEA", 720)
    power_early = ComplianceRules(obligation_cap_bps=2_000)  # owes 900 + 200 = 1,000
    assert compliant.status(power_early) is ComplianceStatus.OPEN
    gas = ComplianceRules(obligation_cap_bps=0)  # owes its 900
    assert compliant.obligation(gas) == 900


def test_a_debt_is_carried_and_deducted_and_survives_a_snapshot() -> None:
    next_year = ComplianceObligation.start("PWR-0001", 2026)
    next_year.carry_debt(2025, 300)
    next_year.deduct_debt(uuid4(), 120)
    assert next_year.debt_outstanding == 180
    restored = Snapshot.take(next_year).mutate(None)
    assert isinstance(restored, ComplianceObligation)
    assert (restored.debt, restored.debt_deducted) == (300, 120)

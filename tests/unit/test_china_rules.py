"""China's surrender rules as the registry ships them, each a worked example whose
figures are computed by hand in the docstring: the CCER cap on the obligation (MEE
Measures 2020, Art. 29), borrowing by gap rate (2021-2022 power plan), the carry-over
limit on net sales (2023-2024 power plan). No I/O."""

from __future__ import annotations

from uuid import uuid4

import pytest

from registry.application.results import ComplianceView
from registry.domain.errors import (
    AdvanceUseLimitExceeded,
    AdvanceUseNotEligible,
    CarryOverLimitExceeded,
    CcerCapExceeded,
    RowsInvalid,
)
from registry.domain.obligations import ComplianceObligation
from registry.domain.rule_defaults import RULE_NAMES, SHIPPED_RULES, shipped_rules
from registry.domain.rules import (
    DEFAULT_RULES,
    LEGACY_BASES,
    CarryOver,
    CcerCapBase,
    ComplianceRules,
    ComplianceYear,
)
from registry.domain.units import SerialBlock, UnitClass, UnitType


def cea(vintage: int, quantity: int) -> SerialBlock:
    return SerialBlock(UnitClass(UnitType.CEA, vintage), 1, quantity)


def ccer(quantity: int) -> SerialBlock:
    return SerialBlock(UnitClass(UnitType.CCER, 2024, "P-0001"), 1, quantity)


def company(year: int, verified: int, allocated: int) -> ComplianceObligation:
    obligation = ComplianceObligation.start("PWR-0001", year)
    obligation.record_emissions(verified, "verifier report", "mee/li")
    obligation.record_allocation(uuid4(), allocated)
    return obligation


POWER_2021 = shipped_rules(2021)["POWER"].rules
POWER_2025 = shipped_rules(2025)["POWER"].rules


def test_ccer_up_to_exactly_the_cap_on_the_obligation_and_one_tonne_over() -> None:
    """A power company, 2025 (obligation capped at allocation + 20 % of verified):
    verified 100,000 t, allocated 70,000 t.
    obligation = min(100,000, 70,000 + 20 % x 100,000) = min(100,000, 90,000) = 90,000 t.
    CCER cap = 5 % x 90,000 = 4,500 t (on verified emissions it would be 5,000 t).
    4,500 CCER pass; 4,000 surrendered, then 501 more (4,501 in all) are refused."""
    obligation = company(2025, 100_000, 70_000)
    assert obligation.obligation(POWER_2025) == 90_000
    assert obligation.ccer_cap(POWER_2025) == 4_500
    obligation.check_surrender(POWER_2025, [ccer(4_500)])
    obligation.record_surrender(uuid4(), "CCER", 4_000)
    assert obligation.ccer_remaining(POWER_2025) == 500
    obligation.check_surrender(POWER_2025, [ccer(500)])
    with pytest.raises(CcerCapExceeded) as raised:
        obligation.check_surrender(POWER_2025, [ccer(501)])
    assert raised.value.metadata == {"limit": "4500", "surrendered": "4000", "requested": "501"}
    assert "of the obligation" in raised.value.message

    view = ComplianceView.of("PWR-0001", 2025, obligation, POWER_2025)
    assert (view.obligation, view.ccer_cap, view.ccer_remaining) == (90_000, 4_500, 500)


def test_rules_written_before_the_base_was_explicit_keep_the_verified_emissions_base() -> None:
    """The same company under a v1 rule (upcast: VERIFIED_EMISSIONS): cap = 5 % x
    100,000 = 5,000 t, so 5,000 pass and 5,001 do not. The issue's case: 20,000 CCER
    against an obligation of 80,000 (25 %) passed only because a 25 % cap was on
    verified emissions; on the obligation 5 % of 80,000 = 4,000 t."""
    legacy = ComplianceRules.from_dict({"obligation_cap_bps": 2_000, **LEGACY_BASES})
    obligation = company(2025, 100_000, 70_000)
    obligation.check_surrender(legacy, [ccer(5_000)])
    with pytest.raises(CcerCapExceeded):
        obligation.check_surrender(legacy, [ccer(5_001)])
    issue = company(2025, 100_000, 60_000)  # obligation min(100,000, 60,000 + 20,000)
    assert issue.obligation(POWER_2025) == 80_000
    with pytest.raises(CcerCapExceeded) as raised:
        issue.check_surrender(POWER_2025, [ccer(20_000)])
    assert raised.value.metadata["limit"] == "4000"


def test_a_borrower_who_qualifies_borrows_half_the_gap() -> None:
    """2021, power: borrowing only from a gap rate of 10 %, at most 50 % of the gap.
    verified 100,000 t, allocated 85,000 t: obligation = min(100,000, 85,000 + 20,000)
    = 100,000; gap = 100,000 - 85,000 = 15,000 t; rate 15 % >= 10 %: may borrow
    50 % x 15,000 = 7,500 t of 2022 allowances; 7,501 are refused."""
    obligation = company(2021, 100_000, 85_000)
    assert POWER_2021.gap(100_000, 85_000) == 15_000
    assert obligation.advance_use_limit(POWER_2021) == 7_500
    assert obligation.check_surrender(POWER_2021, [cea(2021, 10), cea(2022, 7_500)]) == 7_500
    with pytest.raises(AdvanceUseLimitExceeded) as raised:
        obligation.check_surrender(POWER_2021, [cea(2022, 7_501)])
    assert raised.value.metadata["limit"] == "7500"
    assert "of the gap" in raised.value.message
    view = ComplianceView.of("PWR-0001", 2021, obligation, POWER_2021)
    assert (view.gap, view.may_borrow, view.advance_use_remaining) == (15_000, True, 7_500)


def test_a_borrower_at_exactly_the_threshold_qualifies_and_the_relief_caps_the_gap() -> None:
    """allocated 90,000: gap 10,000 = 10 % of 100,000 exactly: qualifies, 5,000 t.
    allocated 60,000: obligation = min(100,000, 60,000 + 20,000) = 80,000; gap 20,000
    (20 %): 10,000 t."""
    assert company(2021, 100_000, 90_000).advance_use_limit(POWER_2021) == 5_000
    assert company(2021, 100_000, 60_000).advance_use_limit(POWER_2021) == 10_000


def test_a_company_below_the_gap_rate_may_not_borrow() -> None:
    """allocated 92,000: gap 8,000 t = 8 % < 10 %: not one 2022 allowance, though the
    year allows borrowing; its status says so."""
    obligation = company(2021, 100_000, 92_000)
    with pytest.raises(AdvanceUseNotEligible) as raised:
        obligation.check_surrender(POWER_2021, [cea(2022, 1)])
    assert raised.value.metadata == {"gap": "8000", "verified": "100000", "threshold_bps": "1000"}
    view = ComplianceView.of("PWR-0001", 2021, obligation, POWER_2021)
    assert (view.gap, view.may_borrow, view.advance_use_limit) == (8_000, False, 0)


def test_a_banker_at_the_carry_over_limit() -> None:
    """2025, power: allowances of 2019-2024 carried within 1.5 x net sales + 10,000 t.
    Net sales 2019-2024: 40,000 t -> limit 1.5 x 40,000 + 10,000 = 70,000 t.
    70,000 t of 2024 vintage pass; 69,000 already used + 1,001 (70,001) do not; 2025
    allowances are not carried and not limited. A net buyer (-5,000) gets b: 10,000."""
    obligation = company(2025, 200_000, 150_000)
    assert POWER_2025.carry_over_limit(40_000) == 70_000
    obligation.check_surrender(POWER_2025, [cea(2024, 70_000), cea(2025, 100_000)], 40_000)
    with pytest.raises(CarryOverLimitExceeded) as raised:
        obligation.check_surrender(POWER_2025, [cea(2024, 1_001)], 40_000, carried_before=69_000)
    assert raised.value.metadata == {"limit": "70000", "used": "69000", "requested": "1001"}
    assert POWER_2025.carry_over_limit(-5_000) == 10_000
    with pytest.raises(CarryOverLimitExceeded):
        obligation.check_surrender(POWER_2025, [cea(2019, 10_001)], -5_000)
    # without the net sales the limit is not judged here (b alone would refuse banks)
    obligation.check_surrender(POWER_2025, [cea(2024, 70_001)])
    view = ComplianceView.of("PWR-0001", 2025, obligation, POWER_2025)
    assert view.net_sales_period == ("2019-01-01", "2024-12-31")
    assert view.with_net_sales(40_000).carry_over_limit == 70_000


def test_carry_over_none_and_unlimited() -> None:
    """NONE: not one carried tonne (2024 for 2025); UNLIMITED: any number."""
    obligation = company(2025, 1_000, 0)
    none = ComplianceRules(carry_over=CarryOver.NONE.value)
    with pytest.raises(CarryOverLimitExceeded):
        obligation.check_surrender(none, [cea(2024, 1)])
    obligation.check_surrender(none, [cea(2025, 1_000)])
    obligation.check_surrender(DEFAULT_RULES, [cea(2019, 1_000)])
    assert DEFAULT_RULES.carry_over_limit(None) is None


def test_the_new_vocabulary_is_validated_field_by_field() -> None:
    bad = ComplianceRules(
        ccer_cap_base="EMISSIONS",
        advance_use_base="LOAN",
        advance_use_min_gap_bps=10_001,
        carry_over=CarryOver.NET_SALES.value,
        carry_over_max_vintage=2025,
        carry_over_net_sales_bps=-1,
        carry_over_base_tonnes=-5,
        carry_over_sales_from="2024-12-31",
        carry_over_sales_to="2019-01-01",
    )
    with pytest.raises(RowsInvalid) as raised:
        bad.check(2025)
    assert {v.field for v in raised.value.violations} == {
        "rules.ccer_cap_base",
        "rules.advance_use_base",
        "rules.advance_use_min_gap_bps",
        "rules.carry_over_max_vintage",
        "rules.carry_over_net_sales_bps",
        "rules.carry_over_base_tonnes",
        "rules.carry_over_sales_to",
    }
    with pytest.raises(RowsInvalid) as missing:
        ComplianceRules(carry_over=CarryOver.NET_SALES.value).check(2025)
    assert {v.field for v in missing.value.violations} == {
        "rules.carry_over_sales_from",
        "rules.carry_over_sales_to",
    }
    with pytest.raises(RowsInvalid) as junk:  # a period is a date whatever the form
        ComplianceRules(carry_over_sales_from="soon").check(2025)
    assert [v.field for v in junk.value.violations] == ["rules.carry_over_sales_from"]


def test_a_version_1_rule_change_is_upcast_to_what_it_meant() -> None:
    """A RulesChanged as v1 stored it (no bases) reads as shares of verified emissions
    open to every company; the new defaults are the obligation and the gap."""
    state = {"sector": "POWER", "rules": {"ccer_cap_bps": 500, "advance_use_bps": 1_000}}
    ComplianceYear.RulesChanged.upcast_v1_v2(state)
    rules = ComplianceRules.from_dict(state["rules"])
    assert rules.ccer_cap_base == CcerCapBase.VERIFIED_EMISSIONS.value
    assert rules.advance_use_base == "VERIFIED_EMISSIONS"
    assert rules.advance_use_min_gap_bps == 0
    assert rules.advance_use_limit(10_000, 10_000) == 1_000  # 10 % of verified, no gap
    assert DEFAULT_RULES.ccer_cap_base == CcerCapBase.OBLIGATION.value
    assert DEFAULT_RULES.advance_use_base == "GAP"
    assert ComplianceYear.RulesChanged.class_version == 3  # v3: unit relief (upcast too)


def test_the_shipped_table_every_figure() -> None:
    """The figures docs/compliance.md gives, one assertion per rule that differs from
    the scheme's defaults (changing a shipped figure fails here)."""
    assert sorted(SHIPPED_RULES) == [2019, 2020, 2021, 2022, 2023, 2024, 2025]
    for year in (2019, 2020):  # the first cycle: gap and gas relief, no borrowing
        power = SHIPPED_RULES[year]["POWER"].rules
        assert (power.obligation_cap_bps, power.advance_use_bps, power.surrender_deadline) == (
            2_000,
            0,
            "2021-12-31",
        )
        assert SHIPPED_RULES[year]["*"].rules.surrender_deadline == "2021-12-31"
    for year in range(2019, 2026):  # gas units owe at most their allocation, every year
        assert SHIPPED_RULES[year]["POWER"].rules.unit_obligation_cap_bps == {"GAS": 0}
        assert SHIPPED_RULES[year]["*"].rules.unit_obligation_cap_bps == {}
        uncertain = "UNCERTAIN" in SHIPPED_RULES[year]["POWER"].source("unit_obligation_cap_bps")
        assert uncertain == (year >= 2023), year
    for year, by_sector in SHIPPED_RULES.items():
        for key, shipped in by_sector.items():
            assert (shipped.rules.ccer_cap_bps, shipped.rules.ccer_cap_base) == (
                500,
                "OBLIGATION",
            ), (year, key)
            for name in RULE_NAMES:
                assert shipped.source(name), (year, key, name)
    for year in (2021, 2022):
        power = SHIPPED_RULES[year]["POWER"].rules
        assert (
            power.obligation_cap_bps,
            power.advance_use_bps,
            power.advance_use_base,
            power.advance_use_min_gap_bps,
            power.surrender_deadline,
        ) == (2_000, 5_000, "GAP", 1_000, "2023-12-31")
        assert SHIPPED_RULES[year]["*"].rules.surrender_deadline == "2023-12-31"
    for year in (2023, 2024):
        power = SHIPPED_RULES[year]["POWER"].rules
        assert (power.obligation_cap_bps, power.advance_use_bps, power.carry_over) == (
            2_000,
            0,
            "UNLIMITED",
        )
        assert power.surrender_deadline == f"{year + 1}-12-31"
    power = SHIPPED_RULES[2025]["POWER"].rules
    assert (
        power.obligation_cap_bps,
        power.advance_use_bps,
        power.carry_over,
        power.carry_over_max_vintage,
        power.carry_over_net_sales_bps,
        power.carry_over_base_tonnes,
        power.carry_over_sales_from,
        power.carry_over_sales_to,
    ) == (2_000, 0, "NET_SALES", 2024, 15_000, 10_000, "2019-01-01", "2024-12-31")
    assert SHIPPED_RULES[2025]["*"].rules == DEFAULT_RULES
    assert "UNCERTAIN" in SHIPPED_RULES[2025]["POWER"].source("carry_over_sales_from")

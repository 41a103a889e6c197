"""The power sector's relief per unit category (issue 18, item 4), as the plans write it:

- Plan 2019-2020 (kept by Plan 2021-2022), allowance surrender: a **gas unit** (燃气机组)
  owes its approved free allocation when its verified emissions reach it, else its
  verified emissions: ``min(verified, allocated)`` per gas unit
  (``unit_obligation_cap_bps = {"GAS": 0}``);
- the same section: a **company** (重点排放单位) whose gap exceeds 20 % of its verified
  emissions owes at most its free allocation + 20 % of its verified emissions
  (``obligation_cap_bps = 2000``), applied to the sum of the units' dues.

Each worked example's figures are computed by hand in its docstring.
"""

from __future__ import annotations

from datetime import date
from uuid import uuid4

import pytest

from registry.application.results import ComplianceView
from registry.domain.accounts import Sector
from registry.domain.allocation import Subtype
from registry.domain.errors import RowsInvalid
from registry.domain.obligations import ComplianceObligation
from registry.domain.rule_defaults import shipped_rules
from registry.domain.rules import (
    UNIT_CATEGORIES,
    ComplianceRules,
    ComplianceYear,
    UnitLine,
    unit_line_violations,
)

POWER_2021 = shipped_rules(2021)["POWER"].rules
COAL = "COAL_CONVENTIONAL_300MW_PLUS"
GAS = "GAS"


def company(year: int, allocated: int, *lines: UnitLine) -> ComplianceObligation:
    """A power company whose ledger allocation is ``allocated`` and whose verified
    emissions are the sum of its unit lines."""
    obligation = ComplianceObligation.start("PWR-0001", year)
    obligation.record_allocation(uuid4(), allocated)
    verified = sum(line.verified_emissions for line in lines)
    assert obligation.record_emissions(verified, "verification report", "mee/li", lines=lines)
    return obligation


def test_the_categories_are_the_allocation_tables_power_subtypes() -> None:
    """The rules repeat allocation's names (allocation imports the obligations): equal."""
    power = {s.value for s in Subtype if s.sector is Sector.POWER}
    assert set(UNIT_CATEGORIES) == power


def test_a_coal_unit_with_a_shortfall() -> None:
    """2021, one coal unit: verified 100,000 t, allocated 70,000 t (its line and the
    ledger). Its line owes 100,000 (no relief for coal). The gap 30,000 is 30 % of
    verified > 20 %, so the company's obligation is capped at 70,000 + 20 % x 100,000 =
    90,000 t (gap 20,000; CCER cap 5 % x 90,000 = 4,500). It surrenders 85,000: at
    closing the shortfall is 90,000 - 85,000 = 5,000 t."""
    o = company(2021, 70_000, UnitLine(COAL, "C1", 100_000, 70_000))
    assert [d.due for d in o.unit_dues(POWER_2021)] == [100_000]
    assert o.obligation(POWER_2021) == 90_000
    assert o.gap(POWER_2021) == 20_000
    assert o.ccer_cap(POWER_2021) == 4_500
    o.record_surrender(uuid4(), "CEA", 85_000)
    assert o.close(POWER_2021, "mee/li", date(2024, 1, 31)) == 5_000
    assert o.shortfall == 5_000 and o.noticed_obligation == 90_000


def test_a_gas_unit_under_its_cap() -> None:
    """2021, one gas unit: verified 30,000 t, allocated 25,000 t. Its line owes
    min(30,000, 25,000 + 0 % x 30,000) = 25,000 t, its allocation; the company cap
    (25,000 + 20 % x 30,000 = 31,000) does not bind: obligation 25,000, gap 0, nothing
    to borrow. Surrendering its 25,000 allocated tonnes makes it compliant. A gas unit
    below its allocation (20,000 verified, 25,000 allocated) owes its 20,000 t."""
    o = company(2021, 25_000, UnitLine(GAS, "G1", 30_000, 25_000))
    assert o.obligation(POWER_2021) == 25_000
    assert o.gap(POWER_2021) == 0
    assert not o.may_borrow(POWER_2021)
    o.record_surrender(uuid4(), "CEA", 25_000)
    assert o.status(POWER_2021).value == "COMPLIANT"
    assert o.close(POWER_2021, "mee/li", date(2024, 1, 31)) == 0

    below = company(2021, 25_000, UnitLine(GAS, "G1", 20_000, 25_000))
    assert below.obligation(POWER_2021) == 20_000


def test_a_mixed_coal_and_gas_company() -> None:
    """2021: coal unit 100,000 t verified / 90,000 allocated, gas unit 30,000 / 25,000;
    ledger allocation 115,000. Dues: coal 100,000, gas min(30,000, 25,000) = 25,000,
    sum 125,000. Company cap: 115,000 + 20 % x 130,000 = 141,000, not binding:
    obligation 125,000, gap 10,000 (7.69 % < 10 %: may not borrow), CCER cap 6,250.
    Without the lines it would owe min(130,000, 141,000) = 130,000: the gas relief is
    the 5,000 t the gas unit emitted above its allocation."""
    o = company(
        2021, 115_000, UnitLine(COAL, "C1", 100_000, 90_000), UnitLine(GAS, "G1", 30_000, 25_000)
    )
    assert [(d.line.category, d.due) for d in o.unit_dues(POWER_2021)] == [
        (COAL, 100_000),
        (GAS, 25_000),
    ]
    assert o.obligation(POWER_2021) == 125_000
    assert o.gap(POWER_2021) == 10_000 and not o.may_borrow(POWER_2021)
    assert o.ccer_cap(POWER_2021) == 6_250
    assert POWER_2021.obligation(130_000, 115_000) == 130_000  # the same without lines
    view = ComplianceView.of("PWR-0001", 2021, o, POWER_2021)
    assert (view.obligation, view.gap, view.ccer_cap) == (125_000, 10_000, 6_250)
    assert [(d.line.unit_id, d.allocated, d.due) for d in view.unit_lines] == [
        ("C1", 90_000, 100_000),
        ("G1", 25_000, 25_000),
    ]


def test_the_company_cap_binds_on_the_sum_of_the_dues() -> None:
    """2021: coal 100,000 / 70,000 and gas 30,000 / 25,000, ledger 95,000. Dues 100,000
    + 25,000 = 125,000; company cap 95,000 + 20 % x 130,000 = 121,000 binds: obligation
    121,000, gap 26,000 (20 % of 130,000: may borrow), advance use 50 % x 26,000 =
    13,000."""
    o = company(
        2021, 95_000, UnitLine(COAL, "C1", 100_000, 70_000), UnitLine(GAS, "G1", 30_000, 25_000)
    )
    assert o.obligation(POWER_2021) == 121_000
    assert o.gap(POWER_2021) == 26_000
    assert o.advance_use_limit(POWER_2021) == 13_000


def test_the_gap_cap_per_unit_is_a_parameter() -> None:
    """Read per unit instead (``{"*": 2000, "GAS": 0}``, no company cap): coal C1
    100,000 / 70,000 owes min(100,000, 70,000 + 20,000) = 90,000; coal C2 50,000 /
    48,000 owes min(50,000, 48,000 + 10,000) = 50,000: 140,000. Per company (the
    shipped reading) the same units owe min(150,000, 118,000 + 30,000) = 148,000."""
    per_unit = ComplianceRules(unit_obligation_cap_bps={"*": 2_000, "GAS": 0}).check(2021)
    lines = (UnitLine(COAL, "C1", 100_000, 70_000), UnitLine(COAL, "C2", 50_000, 48_000))
    assert per_unit.obligation(150_000, 118_000, lines) == 140_000
    assert POWER_2021.obligation(150_000, 118_000, lines) == 148_000


def test_without_lines_the_obligation_is_as_before() -> None:
    """A figure without lines is one line for the whole company, judged against the
    company's allocation: the same obligation as ``min(verified, allocated + 20 %)``,
    also under a ``*`` unit cap equal to the company cap."""
    per_unit = ComplianceRules(unit_obligation_cap_bps={"*": 2_000})
    for verified, allocated in ((100_000, 70_000), (100_000, 95_000), (0, 10), (7, 0)):
        whole = (UnitLine.whole(verified),)
        expected = min(verified, allocated + verified * 2_000 // 10_000)
        assert POWER_2021.obligation(verified, allocated) == expected
        assert POWER_2021.obligation(verified, allocated, whole) == expected
        assert per_unit.obligation(verified, allocated, whole) == expected
        o = ComplianceObligation.start("PWR-0001", 2021)
        o.record_allocation(uuid4(), allocated)
        o.record_emissions(verified, "report", "mee/li")
        assert [line.category for line in o.lines] == [""]
        assert o.obligation(POWER_2021) == expected
        assert ComplianceView.of("PWR-0001", 2021, o, POWER_2021).unit_lines == ()


def test_the_same_lines_again_change_nothing_and_other_lines_are_a_correction() -> None:
    """A repeated upload is UNCHANGED (no event); the same total split differently is
    a correction (one event): gas 30,000 -> 20,000 and coal 100,000 -> 110,000."""
    lines = (UnitLine(COAL, "C1", 100_000, 90_000), UnitLine(GAS, "G1", 30_000, 25_000))
    o = company(2021, 115_000, *lines)
    assert not o.record_emissions(130_000, "again", "mee/li", lines=lines)
    moved = (UnitLine(COAL, "C1", 110_000, 90_000), UnitLine(GAS, "G1", 20_000, 25_000))
    assert o.record_emissions(130_000, "correction", "mee/li", lines=moved)
    assert o.obligation(POWER_2021) == 130_000  # 110,000 + min(20,000, 25,000)
    plain = ComplianceObligation.start("PWR-0002", 2021)
    assert plain.record_emissions(5, "report", "mee/li")
    assert not plain.record_emissions(5, "again", "mee/li")
    with pytest.raises(RowsInvalid):  # a line given must name its category
        plain.record_emissions(5, "again", "mee/li", lines=(UnitLine.whole(5),))


U0 = "unit_lines[0]."


@pytest.mark.parametrize(
    ("lines", "verified", "field", "reason"),
    [
        ((UnitLine("OIL", "U1", 10, 0),), 10, U0 + "unit_category", "INVALID_UNIT_CATEGORY"),
        ((UnitLine(GAS, "U1", -1, 0),), -1, U0 + "verified_emissions", "INVALID_EMISSIONS"),
        ((UnitLine(GAS, "U1", 10, -5),), 10, U0 + "allocated", "INVALID_ALLOCATION"),
        ((UnitLine(GAS, "U1", 10, None),), 10, U0 + "allocated", "INVALID_ALLOCATION"),
        ((UnitLine(GAS, "U\n1", 10, 0),), 10, U0 + "unit_id", "INVALID_UNIT_ID"),
        (
            (UnitLine(GAS, "U1", 5, 0), UnitLine(GAS, "U1", 5, 0)),
            10,
            "unit_lines[1].unit_id",
            "DUPLICATE_UNIT_LINE",
        ),
        (
            (UnitLine(GAS, "U1", 5, 0), UnitLine(COAL, "U2", 4, 0)),
            10,
            "unit_lines",
            "UNIT_LINES_MISMATCH",
        ),
    ],
)
def test_bad_lines_are_named_and_record_nothing(
    lines: tuple[UnitLine, ...], verified: int, field: str, reason: str
) -> None:
    assert [(v.field, v.reason) for v in unit_line_violations(verified, lines)] == [(field, reason)]
    if verified >= 0:
        o = ComplianceObligation.start("PWR-0001", 2021)
        with pytest.raises(RowsInvalid) as refused:
            o.record_emissions(verified, "report", "mee/li", lines=lines)
        assert [v.reason for v in refused.value.violations] == [reason]
        assert o.verified_emissions is None and not list(o.collect_events())[1:]


def test_the_unit_cap_is_validated() -> None:
    bad = ComplianceRules(unit_obligation_cap_bps={"OIL": 0, GAS: 20_000}).violations(2021)
    assert [(v.field, v.description.split()[:3]) for v in bad] == [
        ("rules.unit_obligation_cap_bps", ["unit", "category", "'OIL'"]),
        ("rules.unit_obligation_cap_bps", ["the", "cap", "of"]),
    ]
    assert not ComplianceRules(unit_obligation_cap_bps={"*": 0, GAS: 0}).violations(2021)


def test_a_version_2_emissions_event_is_one_whole_company_line() -> None:
    """``EmissionsVerified`` as v1 and v2 stored it (no lines): one line, no category,
    the company's allocation."""
    state = {"emissions": 1_000, "reason": "r", "principal": "mee/old"}
    ComplianceObligation.EmissionsVerified.upcast_v1_v2(state)
    ComplianceObligation.EmissionsVerified.upcast_v2_v3(state)
    assert state["provinces"] == []
    assert state["lines"] == [
        {"category": "", "unit_id": "", "verified_emissions": 1_000, "allocated": None}
    ]
    assert ComplianceObligation.EmissionsVerified.class_version == 3


def test_a_version_2_rule_change_has_no_unit_relief() -> None:
    state = {"sector": "POWER", "rules": {"obligation_cap_bps": 2_000}}
    ComplianceYear.RulesChanged.upcast_v2_v3(state)
    assert state["rules"]["unit_obligation_cap_bps"] == {}
    assert ComplianceRules.from_dict(state["rules"]).unit_obligation_cap_bps == {}

"""The rules the registry ships for 2019-2025, each with the document and article it
comes from: data a regulator adopts (``registry rules set-shipped YEAR``), shows
(``registry rules show YEAR``) and may override, never applied silently.

A figure the sources found do not settle is marked ``UNCERTAIN`` in its source and
kept a parameter; docs/compliance.md has the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from registry.domain.rules import AdvanceUseBase, CarryOver, CcerCapBase, ComplianceRules

MEASURES_2020 = (
    "MEE, Measures for the Administration of Carbon Emissions Trading (Trial), Order No. 19 (2020)"
)
PLAN_2019_2020 = "MEE, 2019-2020 allocation plan, power (Guohuangui Qihou [2020] No. 3, Dec 2020)"
NOTICE_2021 = (
    "MEE General Office, notice on surrender for the first compliance cycle "
    "(Huanban Qihouhan [2021] No. 492, Oct 2021)"
)
PLAN_2021_2022 = "MEE, 2021-2022 allocation plan, power (Mar 2023)"
PLAN_2023_2024 = "MEE, 2023-2024 allocation plan and compliance work plan, power (Oct 2024)"
UNCERTAIN = "UNCERTAIN: "

BASE_SOURCES: dict[str, str] = {
    "ccer_cap_bps": f"{MEASURES_2020}, Art. 29 (5 % of the allowances due for surrender)",
    "ccer_cap_base": f"{MEASURES_2020}, Art. 29 (应清缴碳排放配额的5%)",
    "cea_min_vintage": "no vintage limit in the sources found",
    "advance_use_bps": "no advance use in the sources found",
    "advance_use_base": "(no advance use)",
    "advance_use_min_gap_bps": "(no advance use)",
    "surrender_deadline": f"{UNCERTAIN}the registry's default, 31 December of the next year",
    "obligation_cap_bps": "no cap on the obligation in the sources found",
    "carry_over": "no carry-over limit in the sources found",
    "carry_over_max_vintage": "(no carry-over limit)",
    "carry_over_net_sales_bps": "(no carry-over limit)",
    "carry_over_base_tonnes": "(no carry-over limit)",
    "carry_over_sales_from": "(no carry-over limit)",
    "carry_over_sales_to": "(no carry-over limit)",
    "unit_obligation_cap_bps": "no relief per unit category in the sources found",
}


@dataclass(frozen=True)
class ShippedRules:
    """One sector's shipped rules for one year, and where each figure comes from."""

    year: int
    sector: str
    rules: ComplianceRules
    sources: dict[str, str]

    def source(self, name: str) -> str:
        return self.sources.get(name) or BASE_SOURCES[name]


SURRENDER_PART = "its part on allowance surrender (配额清缴; section number not verified)"
GAP_RELIEF = {
    "obligation_cap_bps": f"{PLAN_2019_2020}, {SURRENDER_PART}: per company (重点排放单位), "
    "the gap capped at 20 % of its verified emissions; kept by "
    f"{PLAN_2021_2022}"
}
GAS_RELIEF = {
    "unit_obligation_cap_bps": f"{PLAN_2019_2020}, {SURRENDER_PART}: per gas unit (燃气机组), "
    "the obligation is its approved free allocation when its verified "
    f"emissions reach it, else its verified emissions (GAS 0); kept by {PLAN_2021_2022}"
}
GAS_RELIEF_2023_2024 = {
    "unit_obligation_cap_bps": f"{UNCERTAIN}the gas-unit relief of the earlier plans "
    f"assumed kept by {PLAN_2023_2024}"
}
DEADLINE_2021 = {
    "surrender_deadline": f"{NOTICE_2021}: 2019 and 2020 surrendered by 31 Dec 2021 "
    "(95 % by 15 Dec 2021)"
}
BORROWING_2021_2022 = {
    "advance_use_bps": f"{PLAN_2021_2022}: advance use (预支) of 2023 allowances, at most 50 % "
    "of the gap; UNCERTAIN: the registry's advance vintage is Y+1 (2022 for 2021)",
    "advance_use_base": f"{PLAN_2021_2022}: of the gap (配额缺口量)",
    "advance_use_min_gap_bps": f"{PLAN_2021_2022}: gap rate of 10 % or more; "
    "UNCERTAIN: whether the rate is of verified emissions (as here) or of allocation",
}
DEADLINE_2023 = {
    "surrender_deadline": f"{PLAN_2021_2022}: 2021 and 2022 surrendered by 31 Dec 2023 "
    "(95 % by 15 Nov 2023)"
}
NO_BORROWING_2023_2024 = {"advance_use_bps": f"{PLAN_2023_2024}: no advance use"}
RELIEF_2023_2024 = {
    "obligation_cap_bps": f"{UNCERTAIN}20 % gap cap of the earlier plans assumed kept by "
    f"{PLAN_2023_2024}"
}
CARRY_OVER_2025 = {
    "carry_over": f"{PLAN_2023_2024}: 2019-2024 allowances carried over within a per-company limit",
    "carry_over_net_sales_bps": f"{PLAN_2023_2024}: 1.5 x net sales",
    "carry_over_base_tonnes": f"{PLAN_2023_2024}: + 10,000 t (added in the final plan)",
    "carry_over_max_vintage": f"{PLAN_2023_2024}: vintages 2019-2024",
    "carry_over_sales_from": f"{UNCERTAIN}net sales over 2019-2024 by settlement date",
    "carry_over_sales_to": f"{UNCERTAIN}net sales over 2019-2024 by settlement date",
}


def _deadline(year: int) -> str:
    return f"{year + 1}-12-31"


GAS_CAP = {"GAS": 0}
"""A gas unit owes at most its allocation: a cap of 0 bps above it."""


def _shipped() -> dict[int, dict[str, ShippedRules]]:
    table: dict[int, dict[str, ShippedRules]] = {}
    for year in (2019, 2020):
        table[year] = {
            "*": ShippedRules(
                year, "*", ComplianceRules(surrender_deadline="2021-12-31"), DEADLINE_2021
            ),
            "POWER": ShippedRules(
                year,
                "POWER",
                ComplianceRules(
                    surrender_deadline="2021-12-31",
                    obligation_cap_bps=2_000,
                    unit_obligation_cap_bps=dict(GAS_CAP),
                ),
                {**DEADLINE_2021, **GAP_RELIEF, **GAS_RELIEF},
            ),
        }
    for year in (2021, 2022):
        table[year] = {
            "*": ShippedRules(
                year, "*", ComplianceRules(surrender_deadline="2023-12-31"), DEADLINE_2023
            ),
            "POWER": ShippedRules(
                year,
                "POWER",
                ComplianceRules(
                    surrender_deadline="2023-12-31",
                    obligation_cap_bps=2_000,
                    advance_use_bps=5_000,
                    advance_use_base=AdvanceUseBase.GAP.value,
                    advance_use_min_gap_bps=1_000,
                    unit_obligation_cap_bps=dict(GAS_CAP),
                ),
                {**DEADLINE_2023, **GAP_RELIEF, **GAS_RELIEF, **BORROWING_2021_2022},
            ),
        }
    deadline_2324 = {
        "surrender_deadline": f"{UNCERTAIN}{PLAN_2023_2024}: each year by 31 Dec of the next"
    }
    for year in (2023, 2024):
        table[year] = {
            "*": ShippedRules(
                year, "*", ComplianceRules(surrender_deadline=_deadline(year)), deadline_2324
            ),
            "POWER": ShippedRules(
                year,
                "POWER",
                ComplianceRules(
                    surrender_deadline=_deadline(year),
                    obligation_cap_bps=2_000,
                    unit_obligation_cap_bps=dict(GAS_CAP),
                ),
                {
                    **deadline_2324,
                    **RELIEF_2023_2024,
                    **GAS_RELIEF_2023_2024,
                    **NO_BORROWING_2023_2024,
                },
            ),
        }
    relief_2025 = {
        "obligation_cap_bps": f"{UNCERTAIN}no 2025 power plan found: the 2023-2024 relief kept",
        "unit_obligation_cap_bps": f"{UNCERTAIN}no 2025 power plan found: the 2023-2024 "
        "gas-unit relief kept",
    }
    table[2025] = {
        "*": ShippedRules(2025, "*", ComplianceRules(), {}),
        "POWER": ShippedRules(
            2025,
            "POWER",
            ComplianceRules(
                obligation_cap_bps=2_000,
                unit_obligation_cap_bps=dict(GAS_CAP),
                carry_over=CarryOver.NET_SALES.value,
                carry_over_max_vintage=2024,
                carry_over_net_sales_bps=15_000,
                carry_over_base_tonnes=10_000,
                carry_over_sales_from="2019-01-01",
                carry_over_sales_to="2024-12-31",
            ),
            {**relief_2025, **CARRY_OVER_2025},
        ),
    }
    for by_sector in table.values():
        for shipped in by_sector.values():
            assert shipped.rules.ccer_cap_base == CcerCapBase.OBLIGATION.value
            shipped.rules.check(shipped.year)
    return table


SHIPPED_RULES = _shipped()
"""year -> rule key (``*`` or a sector) -> the shipped rules and their sources."""

RULE_NAMES = tuple(f.name for f in fields(ComplianceRules))


def shipped_rules(year: int) -> dict[str, ShippedRules]:
    """The shipped rules of ``year`` by rule key; empty for a year not shipped."""
    return SHIPPED_RULES.get(year, {})

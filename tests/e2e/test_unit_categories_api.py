"""The power relief per unit category through the real gRPC API: rules with a gas
unit cap set and read back, verified emissions recorded with unit lines (bad lines
refused and named, nothing recorded), and the obligation and per-line figures a
regulator reads in GetComplianceStatus."""

from __future__ import annotations

from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from tests.e2e.conftest import INVALID, Api, rpc_error
from tests.e2e.market import (
    allocate,
    allocation,
    compliance,
    emissions,
    issue,
    open_company,
    record_emissions,
    surrender,
)

COAL = "COAL_CONVENTIONAL_300MW_PLUS"


def line(
    category: str, unit_id: str, verified: int, allocated: int
) -> admin_pb.VerifiedEmissionsUnitLine:
    return admin_pb.VerifiedEmissionsUnitLine(
        unit_category=category, unit_id=unit_id, verified_emissions=verified, allocated=allocated
    )


def test_a_mixed_coal_and_gas_company_through_the_api(api: Api) -> None:
    """2025 power rules: company cap 20 %, GAS 0. PWR-SD-0001: coal C1 100,000 t verified /
    90,000 allocated, gas G1 30,000 / 25,000; ledger allocation 115,000. Dues: coal
    100,000, gas min(30,000, 25,000) = 25,000: 125,000; company cap 115,000 + 20 % x
    130,000 = 141,000 does not bind: obligation 125,000, gap 10,000, CCER cap 6,250.
    PWR-SD-0002 (one gas unit, 30,000 / 25,000, allocated 25,000) owes 25,000 and is
    compliant after surrendering its allocation."""
    regulator = api.regulator
    client = regulator.administration
    set_rules = client.SetComplianceRules
    regulator.call(
        set_rules,
        admin_pb.SetComplianceRulesRequest(
            compliance_year=2025,
            sector="POWER",
            reason="2025 power relief",
            rules=admin_pb.ComplianceRules(
                ccer_cap_bps=500, obligation_cap_bps=2_000, unit_obligation_cap_bps={"GAS": 0}
            ),
        ),
    )
    bad_rule = rpc_error(
        lambda: regulator.call(
            set_rules,
            admin_pb.SetComplianceRulesRequest(
                compliance_year=2025,
                sector="POWER",
                reason="typo",
                rules=admin_pb.ComplianceRules(unit_obligation_cap_bps={"OIL": 0}),
            ),
        )
    )
    assert (bad_rule.code, bad_rule.reason) == (INVALID, "INVALID_RULE")
    assert [f for f, _ in bad_rule.violations] == ["rules.unit_obligation_cap_bps.OIL"]
    read = regulator.call(
        client.GetComplianceRules, admin_pb.GetComplianceRulesRequest(compliance_year=2025)
    )
    power = {r.sector: r.rules for r in read.rules}["POWER"]
    assert dict(power.unit_obligation_cap_bps) == {"GAS": 0}

    open_company(regulator, "PWR-SD-0001")
    open_company(regulator, "PWR-SD-0002")
    open_company(regulator, "STL-MX-0001", common.SECTOR_STEEL)
    issue(regulator, "ISS-1", 140_000)
    allocate(
        regulator,
        allocation("AL-1", "PWR-SD-0001", 115_000),
        allocation("AL-2", "PWR-SD-0002", 25_000),
    )

    mixed = emissions("PWR-SD-0001", 130_000)
    mixed.unit_lines.extend([line(COAL, "C1", 100_000, 90_000), line("GAS", "G1", 30_000, 25_000)])
    gas = emissions("PWR-SD-0002", 30_000)
    gas.unit_lines.append(line("GAS", "G1", 30_000, 25_000))

    wrong_sum = emissions("PWR-SD-0001", 130_000)
    wrong_sum.unit_lines.append(line(COAL, "C1", 100_000, 90_000))
    steel = emissions("STL-MX-0001", 10)
    steel.unit_lines.append(line(COAL, "", 10, 0))
    refused = rpc_error(lambda: record_emissions(regulator, gas, wrong_sum, steel))
    assert refused.code is INVALID
    assert [f for f, _ in refused.violations] == ["rows[1].unit_lines", "rows[2].unit_lines"]
    assert compliance(regulator, "PWR-SD-0002").state == account_pb.COMPLIANCE_STATE_NOT_VERIFIED

    recorded = record_emissions(regulator, mixed, gas)
    assert [r.status for r in recorded.results] == [admin_pb.EMISSIONS_ROW_STATUS_RECORDED] * 2
    again = record_emissions(regulator, mixed)
    assert again.results[0].status == admin_pb.EMISSIONS_ROW_STATUS_UNCHANGED

    status = compliance(regulator, "PWR-SD-0001")
    assert (status.verified_emissions, status.allocated, status.obligation) == (
        130_000,
        115_000,
        125_000,
    )
    assert (status.gap, status.ccer_cap) == (10_000, 6_250)
    assert [
        (u.unit_category, u.unit_id, u.verified_emissions, u.allocated, u.due)
        for u in status.unit_lines
    ] == [(COAL, "C1", 100_000, 90_000, 100_000), ("GAS", "G1", 30_000, 25_000, 25_000)]

    operator = api.operator
    operator.call(operator.accounts.SurrenderUnits, surrender("S-GS", "PWR-SD-0002", 25_000))
    gas_status = compliance(regulator, "PWR-SD-0002")
    assert (gas_status.obligation, gas_status.state) == (
        25_000,
        account_pb.COMPLIANCE_STATE_COMPLIANT,
    )

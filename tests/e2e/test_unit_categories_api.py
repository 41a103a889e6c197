"""The power relief per unit category through the real gRPC API: rules with a gas
unit cap set and read back, verified emissions recorded with unit lines (bad lines
refused and named, nothing recorded), and the obligation and per-line figures a
regulator reads in GetComplianceStatus."""

from __future__ import annotations

from pathlib import Path

from registry.client import RegistryClient
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
    seed_market,
    surrender,
)
from tests.e2e.test_server_process import cli, first_token, serving

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
    assert [f for f, _ in bad_rule.violations] == ["rules.unit_obligation_cap_bps"]
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


def test_the_regulator_commands_set_show_import_and_report_unit_lines(tmp_path: Path) -> None:
    """`registry rules set --unit-cap GAS=0`, `rules show`, `import emissions` with a
    unit_lines column and `compliance-status` against a server process. PWR-SD-0001
    (allocated 100,000): coal C1 100,000 / 80,000 owes 100,000, gas G1 30,000 / 20,000
    owes 20,000: 120,000; company cap 100,000 + 20 % x 130,000 = 126,000 does not bind:
    obligation 120,000."""
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            seed_market(client)
        bad = cli(server, "rules", "set", "2025", "POWER", "--unit-cap", "GAS", "--reason", "x")
        assert bad.returncode == 2 and "CATEGORY=BPS" in bad.stderr
        done = cli(
            server, "rules", "set", "2025", "POWER", "--obligation-cap-bps", "2000",
            "--unit-cap", "GAS=0", "--reason", "power relief per unit category",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        shown = cli(server, "rules", "show", "2025")
        assert "unit_obligation_cap_bps" in shown.stdout and "GAS=0" in shown.stdout

        table = tmp_path / "verified-2025.csv"
        table.write_text(
            "account_id,compliance_year,verified_emissions,reason,unit_lines\n"
            f"PWR-SD-0001,2025,130000,report V-1,{COAL}:C1:100000:80000;GAS:G1:30000:20000\n"
            "PWR-SD-0002,2025,40000,report V-2,\n"
        )
        imported = cli(server, "import", "emissions", str(table))
        assert imported.returncode == 0, imported.stderr
        assert "RECORDED 2" in imported.stdout
        status = cli(server, "compliance-status", "PWR-SD-0001", "2025")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert any(line.split()[:2] == ["obligation", "120,000"] for line in lines), lines
        gas = next(line for line in lines if "GAS G1" in line)
        assert gas.split()[2:] == ["30,000", "t", "20,000", "t", "20,000", "t"]
        plain = cli(server, "compliance-status", "PWR-SD-0002", "2025")
        assert "by unit" not in plain.stdout

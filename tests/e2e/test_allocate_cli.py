"""`registry allocate` against a real server process: pre-allocation and true-up computed
from the benchmark table and output files, proposed and approved by two regulators,
imported, and re-run to nothing; each figure checked against the allocation formulas.
Then the new sectors' first year (allocation = verified emissions) and a CHP unit's
electricity and heat lines read from the year-by-year table."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

from registry.cli.benchmark_tables import (
    BENCHMARKS_BY_YEAR,
    ILLUSTRATIVE_BENCHMARKS_2025,
    read_benchmark_table,
)
from registry.client import RegistryClient
from registry.domain.accounts import Sector
from registry.domain.allocation import (
    Subtype,
    final_allocation,
    pre_allocation,
)
from registry.v1 import common_pb2 as common
from tests.e2e.market import caught_up, compliance, issue, open_company
from tests.e2e.test_server_process import add_principal, cli, first_token, serving

BENCHMARKS = str(ILLUSTRATIVE_BENCHMARKS_2025)
OUTPUT_HEADER = "account_id,year,subtype,output,unit_id,factors\n"
OUTPUT_2024 = (
    OUTPUT_HEADER
    + "PWR-A,2024,COAL_CONVENTIONAL_300MW_PLUS,1000001,U1,cooling=1.05\n"
    + "PWR-A,2024,GAS,500000.5,U2,\n"
    + "CEM-B,2024,CEMENT_CLINKER,1250000,,\n"
    + "STL-C,2024,STEEL,2000000,,\n"
)
OUTPUT_2025 = (
    OUTPUT_HEADER
    + "PWR-A,2025,COAL_CONVENTIONAL_300MW_PLUS,500000,U1,cooling=1.05\n"
    + "PWR-A,2025,GAS,500000.5,U2,\n"
    + "CEM-B,2025,CEMENT_CLINKER,1400000,,\n"
    + "STL-C,2025,STEEL,1400000,,\n"
)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def table_rows(path: Path) -> dict[str, tuple[str, int, str]]:
    """account -> (kind, quantity, source) of an allocation table file."""
    with path.open(encoding="utf-8", newline="") as lines:
        return {
            r["account_id"]: (r["kind"], int(r["quantity"]), r["source"])
            for r in csv.DictReader(lines)
        }


def expected() -> tuple[dict[str, int], dict[str, int]]:
    """Pre-allocation and final allocation per account, row by row from the formulas."""
    table = read_benchmark_table(ILLUSTRATIVE_BENCHMARKS_2025)
    coal = table.row(2025, Sector.POWER, Subtype.COAL_CONVENTIONAL_300MW_PLUS)
    gas = table.row(2025, Sector.POWER, Subtype.GAS)
    cement = table.row(2025, Sector.CEMENT, Subtype.CEMENT_CLINKER)
    steel = table.row(2025, Sector.STEEL, Subtype.STEEL)
    cooling = {"cooling": Decimal("1.05")}
    pre = {
        "PWR-A": pre_allocation(coal, 1_000_001, cooling)
        + pre_allocation(gas, Decimal("500000.5")),
        "CEM-B": pre_allocation(cement, 1_250_000),
        "STL-C": pre_allocation(steel, 2_000_000),
    }
    final = {
        "PWR-A": final_allocation(coal, 500_000, cooling)
        + final_allocation(gas, Decimal("500000.5")),
        "CEM-B": final_allocation(cement, 1_400_000),
        "STL-C": final_allocation(steel, 1_400_000),
    }
    return pre, final


def test_pre_allocation_and_true_up_from_output_files(tmp_path: Path) -> None:
    pre, final = expected()
    # the scenario needs each direction: PWR-A produced less (a return), CEM-B more
    assert final["PWR-A"] < pre["PWR-A"] and final["CEM-B"] > pre["CEM-B"]
    assert final["STL-C"] == pre["STL-C"]  # 0.7 x 2,000,000 t = 1,400,000 t: no row
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        # the approving regulator exists before the proposals it approves (one granted
        # after a proposal cannot approve it: SEPARATION_OF_DUTIES)
        second = add_principal(server, "mee", "regulator-wang", "regulator")
        with RegistryClient(server.address, token, attempts=1) as client:
            for account, sector in (
                ("PWR-A", common.SECTOR_POWER),
                ("CEM-B", common.SECTOR_CEMENT),
                ("STL-C", common.SECTOR_STEEL),
            ):
                open_company(client, account, sector)
            issue(client, "ISS-CEA-2025", 20_000_000)

        # bad output rows are named by line; nothing is written
        bad = write(
            tmp_path / "bad.csv",
            OUTPUT_HEADER
            + "PWR-A,2024,GAS,1,U2,\n"
            + "PWR-A,2023,GAS,1,U3,\n"
            + "CEM-B,2024,CEMENT_CLINKER,1,,cooling=1.1\n"
            + "NOBODY,2024,STEEL,1,,\n",
        )
        out = tmp_path / "pre-2025.csv"
        refused = cli(
            server,
            "allocate",
            "pre",
            "2025",
            "--benchmarks",
            BENCHMARKS,
            "--outputs",
            bad,
            "--out",
            str(out),
        )
        assert refused.returncode == 5 and not out.exists(), refused.stderr
        assert "line 3, year: INVALID_COMPLIANCE_YEAR" in refused.stderr, refused.stderr
        assert "line 4, factors: UNKNOWN_CORRECTION_FACTOR" in refused.stderr
        assert "Nothing was written" in refused.stderr and "Traceback" not in refused.stderr
        unknown = cli(
            server,
            "allocate",
            "pre",
            "2025",
            "--benchmarks",
            BENCHMARKS,
            "--outputs",
            write(tmp_path / "unknown.csv", OUTPUT_HEADER + "NOBODY,2024,STEEL,1,,\n"),
            "--out",
            str(out),
        )
        assert unknown.returncode == 5 and not out.exists()
        assert "line 2, account_id: UNKNOWN_ACCOUNT" in unknown.stderr, unknown.stderr

        # pre-allocation: 70 % of benchmark x 2024 output, per row floored, summed
        outputs_2024 = write(tmp_path / "output-2024.csv", OUTPUT_2024)
        done = cli(
            server,
            "allocate",
            "pre",
            "2025",
            "--benchmarks",
            BENCHMARKS,
            "--outputs",
            outputs_2024,
            "--out",
            str(out),
            "--source",
            "CN-ISSUANCE",
        )
        assert done.returncode == 0, done.stderr
        assert table_rows(out) == {a: ("ALLOCATION", q, "CN-ISSUANCE") for a, q in pre.items()}
        assert f"{sum(pre.values()):,}" in done.stdout.splitlines()[-2], done.stdout
        proposed = cli(server, "import", "allocations", str(out), "--propose", "P-PRE-2025")
        assert proposed.returncode == 0, proposed.stderr
        assert "proposed mee:P-PRE-2025: ALLOCATION_TABLE of 3 rows" in proposed.stdout
        with RegistryClient(server.address, token, attempts=1) as client:
            assert compliance(client, "PWR-A").allocated == 0  # nothing before approval
        approved = cli(server, "proposals", "approve", "mee", "P-PRE-2025", "--token", second)
        assert approved.returncode == 0, approved.stderr
        assert "EXECUTED: 3 of 3 allocation rows completed" in approved.stdout
        with RegistryClient(server.address, token, attempts=1) as client:
            assert {a: compliance(client, a).allocated for a in pre} == pre
        again = cli(
            server,
            "allocate",
            "pre",
            "2025",
            "--benchmarks",
            BENCHMARKS,
            "--outputs",
            outputs_2024,
            "--out",
            str(out),
        )
        assert again.returncode == 0 and table_rows(out) == {}, again.stdout

        # true-up: benchmark x verified 2025 output; the excess goes back to the reserve
        trued = tmp_path / "true-up-2025.csv"
        outputs_2025 = write(tmp_path / "output-2025.csv", OUTPUT_2025)
        done = cli(
            server,
            "allocate",
            "true-up",
            "2025",
            "--benchmarks",
            BENCHMARKS,
            "--outputs",
            outputs_2025,
            "--out",
            str(trued),
            "--source",
            "CN-ISSUANCE",
        )
        assert done.returncode == 0, done.stderr
        changes = {a: final[a] - pre[a] for a in pre}
        assert table_rows(trued) == {
            a: ("ALLOCATION", q, "CN-ISSUANCE") if q > 0 else ("ALLOCATION_RETURN", -q, "")
            for a, q in changes.items()
            if q
        }
        imported = cli(server, "import", "allocations", str(trued))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "COMPLETED                  2" in imported.stdout, imported.stdout
        with RegistryClient(server.address, token, attempts=1) as client:
            caught_up(client)
            assert {a: compliance(client, a).allocated for a in final} == final
        replayed = cli(server, "import", "allocations", str(trued))
        assert "nothing changed" in replayed.stdout, replayed.stdout
        settled = cli(
            server,
            "allocate",
            "true-up",
            "2025",
            "--benchmarks",
            BENCHMARKS,
            "--outputs",
            outputs_2025,
            "--out",
            str(trued),
        )
        assert settled.returncode == 0 and table_rows(trued) == {}, settled.stdout


EMISSIONS_HEADER = "account_id,compliance_year,verified_emissions,reason\n"


def test_new_sectors_first_year_at_verified_emissions_and_a_chp_unit(tmp_path: Path) -> None:
    """2024: steel and cement are allocated their verified emissions (3,456,789 t and
    1,000,000 t), power is refused by line, a figure other than the one the registry
    records is refused; importing the table gives exactly those figures and a re-run
    writes nothing. 2020: a CHP unit's electricity line
    (1,200,000 MWh x 0.979 x (1 - 0.22 x 0.35) = 1,084,340.4 -> 1,084,340 t) plus its heat
    line (4,000,000 GJ x 0.126 = 504,000 t) = 1,588,340 t (tests/unit/test_allocation_china)."""
    by_year = str(BENCHMARKS_BY_YEAR)
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        with RegistryClient(server.address, token, attempts=1) as client:
            for account, sector in (
                ("STL-V", common.SECTOR_STEEL),
                ("CEM-V", common.SECTOR_CEMENT),
                ("PWR-V", common.SECTOR_POWER),
            ):
                open_company(client, account, sector)
            issue(
                client,
                "ISS-CEA-2024",
                10_000_000,
                common.UnitClass(unit_type=common.UNIT_TYPE_CEA, vintage=2024),
            )
        out = tmp_path / "verified-2024-table.csv"

        def allocate(emissions: str) -> Any:
            return cli(
                server,
                "allocate",
                "verified-emissions",
                "2024",
                "--benchmarks",
                by_year,
                "--emissions",
                write(tmp_path / "verified-2024.csv", emissions),
                "--out",
                str(out),
                "--source",
                "CN-ISSUANCE",
            )

        good = (
            EMISSIONS_HEADER
            + "STL-V,2024,3456789,verification report HB-2024-1\n"
            + "CEM-V,2024,1000000,verification report AH-2024-7\n"
        )
        refused = allocate(good + "PWR-V,2024,4000000,verification report SD-2024-2\n")
        assert refused.returncode == 5 and not out.exists(), refused.stdout
        assert "line 4, account_id: NOT_VERIFIED_EMISSIONS_ALLOCATED" in refused.stderr
        wrong_year = allocate(good.replace("STL-V,2024", "STL-V,2025"))
        assert wrong_year.returncode == 5 and not out.exists()
        assert "line 2, compliance_year: INVALID_COMPLIANCE_YEAR" in wrong_year.stderr

        # once the registry records the verified emissions, the file must agree with them
        recorded = cli(server, "import", "emissions", write(tmp_path / "recorded-2024.csv", good))
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
        mismatch = allocate(good.replace("CEM-V,2024,1000000", "CEM-V,2024,1000001"))
        assert mismatch.returncode == 5 and not out.exists()
        assert "line 3, verified_emissions: EMISSIONS_MISMATCH" in mismatch.stderr

        done = allocate(good)
        assert done.returncode == 0, done.stderr
        assert table_rows(out) == {
            "STL-V": ("ALLOCATION", 3_456_789, "CN-ISSUANCE"),
            "CEM-V": ("ALLOCATION", 1_000_000, "CN-ISSUANCE"),
        }
        with out.open(encoding="utf-8") as lines:
            ids = [r["transaction_id"] for r in csv.DictReader(lines)]
        assert all(i.startswith("VERIFIED-2024-") for i in ids), ids
        imported = cli(server, "import", "allocations", str(out))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        with RegistryClient(server.address, token, attempts=1) as client:
            caught_up(client)
            assert {a: compliance(client, a, 2024).allocated for a in ("STL-V", "CEM-V")} == {
                "STL-V": 3_456_789,
                "CEM-V": 1_000_000,
            }
        again = allocate(good)
        assert again.returncode == 0 and table_rows(out) == {}, again.stdout

        # steel in 2024 cannot be allocated by benchmark: the table says verified emissions
        by_benchmark = cli(
            server,
            "allocate",
            "true-up",
            "2024",
            "--benchmarks",
            by_year,
            "--outputs",
            write(tmp_path / "steel-2024.csv", OUTPUT_HEADER + "STL-V,2024,STEEL,1900000,,\n"),
            "--out",
            str(tmp_path / "steel-true-up.csv"),
        )
        assert by_benchmark.returncode == 5
        assert "line 2, year: NOT_BENCHMARK_ALLOCATED" in by_benchmark.stderr

        # a CHP unit: one output row per product line, summed for the account
        chp = tmp_path / "chp-2020.csv"
        done = cli(
            server,
            "allocate",
            "true-up",
            "2020",
            "--benchmarks",
            by_year,
            "--outputs",
            write(
                tmp_path / "output-2020.csv",
                "account_id,year,subtype,product,output,unit_id,inputs\n"
                "PWR-V,2020,COAL_CONVENTIONAL_BELOW_300MW,ELECTRICITY,1200000,U1,"
                "cooling_method=WATER;heat_share=0.35\n"
                "PWR-V,2020,COAL_CONVENTIONAL_BELOW_300MW,HEAT,4000000,U1,\n",
            ),
            "--out",
            str(chp),
        )
        assert done.returncode == 0, done.stderr
        assert table_rows(chp) == {"PWR-V": ("ALLOCATION", 1_588_340, "")}

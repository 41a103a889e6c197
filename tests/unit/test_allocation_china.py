"""China's allocation rules as worked examples: product lines (electricity + heat), the
correction rules the table holds (cooling, heat share, load rate), allocation at verified
emissions (steel 2024) and year-by-year benchmarks (steel 2025, 2027).

Every figure is computed by hand in the docstring; the tables are the shipped ones
(``registry/data/allocation/benchmarks-by-year.csv``), so changing a figure or a rule in
the data fails a test here. Which of those figures are verified and which are uncertain
or illustrative: docs/allocation-tables.md.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from registry.cli.benchmark_tables import (
    BENCHMARKS_BY_YEAR,
    parse_corrections,
    parse_inputs,
    read_benchmark_table,
    read_output_data,
)
from registry.domain.accounts import Sector
from registry.domain.allocation import (
    BenchmarkRow,
    BenchmarkTable,
    Formula,
    Method,
    OutputRow,
    OutputUse,
    Product,
    Subtype,
    account_targets,
    final_allocation,
    pre_allocation,
    verified_emissions_allocation,
)
from registry.domain.errors import InvalidCommand, RowsInvalid

D = Decimal
COAL_300_PLUS = Subtype.COAL_CONVENTIONAL_300MW_PLUS
COAL_BELOW_300 = Subtype.COAL_CONVENTIONAL_BELOW_300MW


@pytest.fixture(scope="module")
def table() -> BenchmarkTable:
    return read_benchmark_table(BENCHMARKS_BY_YEAR)


def reason_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidCommand) as raised:
        call(*args, **kwargs)
    return raised.value.reason


def inputs(text: str) -> Any:
    return parse_inputs(text)


# == power: worked examples ======================================================


def test_a_coal_unit_with_load_and_cooling_corrections(table: BenchmarkTable) -> None:
    """An air-cooled conventional coal unit above 300 MW, pure condensing, in 2020.

    Electricity supplied 3,000,000 MWh; benchmark 0.877 tCO2/MWh; cooling AIR -> 1.05;
    heat share 0 -> 1 - 0.22 x 0 = 1; load rate 0.78 (75 % <= F < 80 %) ->
    1.007 + 0.0016 x (80 - 78) = 1.0102.
    Final: 3,000,000 x 0.877 = 2,631,000; x 1.05 = 2,762,550; x 1.0102 = 2,762,550 +
    28,178.01 = 2,790,728.01 -> 2,790,728 t.
    Pre-allocation (0.7 of the same output): 1,953,509.607 -> 1,953,509 t.
    A water-cooled unit at load 0.70 (F < 75 %): 1.015^(16 - 14) = 1.030225;
    1,000,000 x 0.877 x 1.030225 = 903,507.325 -> 903,507 t.
    """
    row = table.row(2020, Sector.POWER, COAL_300_PLUS)
    reported = inputs("cooling_method=AIR;heat_share=0;load_rate=0.78")
    assert row.resolve_factors(None, reported) == {
        "load": D("1.0102"),
        "cooling": D("1.05"),
        "heat_supply": D("1"),
    }
    assert final_allocation(row, D(3_000_000), inputs=reported) == 2_790_728
    assert pre_allocation(row, D(3_000_000), inputs=reported) == 1_953_509
    low = inputs("cooling_method=WATER;heat_share=0;load_rate=0.70")
    assert final_allocation(row, D(1_000_000), inputs=low) == 903_507


@pytest.mark.parametrize(
    ("load_rate", "factor"),
    [
        ("0.95", "1"),  # F >= 85 %: 1
        ("0.85", "1"),
        ("0.82", "1.0042"),  # 1 + 0.0014 x (85 - 82)
        ("0.80", "1.007"),  # 1 + 0.0014 x 5 = 1.007 + 0.0016 x 0: the bands join
        ("0.75", "1.015"),  # 1.007 + 0.0016 x 5 = 1.015^(16 - 15): the bands join
        ("0.60", "1.061363550625"),  # 1.015^(16 - 12) = 1.015^4
    ],
)
def test_the_load_correction_bands(table: BenchmarkTable, load_rate: str, factor: str) -> None:
    """The piecewise load (output) coefficient correction, band by band (table data)."""
    correction = table.row(2020, Sector.POWER, COAL_300_PLUS).corrections["load"]
    assert correction.value(D(load_rate)) == D(factor)


def test_a_fractional_power_is_taken_to_28_digits() -> None:
    """1.015^(16 - 20 x 0.7123) = 1.015^1.754: irrational, so 28 significant digits."""
    value = parse_corrections("load(load_rate): 1.015^(16-20*x)")["load"].value(D("0.7123"))
    assert len(value.as_tuple().digits) == 28
    assert D("1.0264") < value < D("1.0265")


def test_a_gas_unit(table: BenchmarkTable) -> None:
    """A gas unit in 2020 supplying some heat.

    Electricity 800,000 MWh x 0.392 x (1 - 0.6 x 0.1 = 0.94) = 313,600 x 0.94 = 294,784 t.
    Heat 200,000 GJ x 0.059 = 11,800 t. Unit: 294,784 + 11,800 = 306,584 t.
    Gas units have no cooling or load correction: reporting one is refused.
    """
    rows = [
        OutputRow(
            "PWR-GAS1", 2020, Subtype.GAS, D(800_000), unit_id="G1", inputs=inputs("heat_share=0.1")
        ),
        OutputRow("PWR-GAS1", 2020, Subtype.GAS, D(200_000), unit_id="G1", product=Product.HEAT),
    ]
    assert [r.earns(table, OutputUse.TRUE_UP) for r in rows] == [294_784, 11_800]
    assert account_targets(rows, table, OutputUse.TRUE_UP) == {
        "PWR-GAS1": (Sector.POWER, 2, 306_584)
    }
    gas = table.row(2020, Sector.POWER, Subtype.GAS)
    assert reason_of(gas.resolve_factors, None, inputs("load_rate=0.7")) == (
        "UNKNOWN_CORRECTION_INPUT"
    )


def test_a_chp_plant_earns_its_electricity_line_plus_its_heat_line(
    table: BenchmarkTable,
) -> None:
    """A water-cooled conventional coal CHP unit of 300 MW or less, 2020.

    Electricity: 1,200,000 MWh x 0.979 x cooling 1 x heat share 0.35 -> 1 - 0.22 x 0.35
    = 0.923 x load 1 (not reported: the 2019-2020 load correction is for pure condensing
    units) = 1,174,800 x 0.923 = 1,084,340.4 -> 1,084,340 t.
    Heat: 4,000,000 GJ x 0.126 tCO2/GJ = 504,000 t.
    The unit: 1,084,340 + 504,000 = 1,588,340 t (the electricity line alone, as before
    this change, left 504,000 t unallocated).
    Read from an output file: each line floored on its own, summed for the account.
    """
    text = (
        "account_id,year,subtype,product,output,unit_id,factors,inputs\n"
        "PWR-CHP1,2020,COAL_CONVENTIONAL_BELOW_300MW,ELECTRICITY,1200000,U1,,"
        "cooling_method=WATER;heat_share=0.35\n"
        "PWR-CHP1,2020,COAL_CONVENTIONAL_BELOW_300MW,HEAT,4000000,U1,,\n"
    )
    rows = read_output_data(text, table, OutputUse.TRUE_UP)
    assert [r.product for r in rows] == [Product.ELECTRICITY, Product.HEAT]
    assert [r.earns(table, OutputUse.TRUE_UP) for r in rows] == [1_084_340, 504_000]
    assert account_targets(rows, table, OutputUse.TRUE_UP) == {
        "PWR-CHP1": (Sector.POWER, 2, 1_588_340)
    }


def test_a_coal_unit_must_report_what_its_corrections_read(table: BenchmarkTable) -> None:
    """The plan tables give no default cooling method or heat share: a row without them
    is refused by line, not allocated as if water-cooled."""
    text = (
        "account_id,year,subtype,output,inputs\n"
        "PWR-1,2020,COAL_CONVENTIONAL_300MW_PLUS,1000,heat_share=0\n"
        "PWR-1,2021,COAL_CONVENTIONAL_300MW_PLUS,1000,cooling_method=DRY;heat_share=0\n"
        "PWR-2,2020,STEEL,1000,\n"
        "PWR-3,2020,COAL_UNCONVENTIONAL,1000,cooling_method=AIR;heat_share=0;load_rate=0.7\n"
    )
    with pytest.raises(RowsInvalid) as raised:
        read_output_data(text, table, OutputUse.TRUE_UP)
    assert [(v.field, v.reason) for v in raised.value.violations] == [
        ("rows[0].inputs", "MISSING_CORRECTION_INPUT"),
        ("rows[1].inputs", "INVALID_CORRECTION_INPUT"),  # no case covers DRY
        ("rows[2].subtype", "NO_BENCHMARK"),
        ("rows[3].inputs", "UNKNOWN_CORRECTION_INPUT"),  # no load rule for CFB units
    ]


def test_a_factor_given_outright_overrides_the_correction(table: BenchmarkTable) -> None:
    """A regulator's own figure wins: cooling=1.02 given, AIR (1.05) ignored.
    1,000 MWh x 0.877 x 1.02 = 894.54 -> 894 t."""
    row = table.row(2020, Sector.POWER, COAL_300_PLUS)
    reported = inputs("cooling_method=AIR;heat_share=0")
    assert final_allocation(row, D(1000), {"cooling": D("1.02")}, reported) == 894


def test_heat_is_a_power_line_only() -> None:
    assert reason_of(OutputRow, "STL-1", 2025, Subtype.STEEL, D(1), product="HEAT") == (
        "SUBTYPE_PRODUCT_MISMATCH"
    )
    assert OutputRow("STL-1", 2025, Subtype.STEEL, D(1)).product is Product.PRODUCT
    assert OutputRow("PWR-1", 2025, Subtype.GAS, D(1)).product is Product.ELECTRICITY


# == new sectors: verified emissions, then benchmarks by year =====================


def test_a_steel_company_in_2024_is_allocated_its_verified_emissions(
    table: BenchmarkTable,
) -> None:
    """2024: allocation = verified emissions = 3,456,789 t (Work Plan, 26 March 2025).
    Not for power in 2024 (no such row), nor for steel in 2025 (benchmark year); and no
    benchmark computation for steel in 2024."""
    assert table.method(2024, Sector.STEEL) is Method.VERIFIED_EMISSIONS
    assert verified_emissions_allocation(table, 2024, Sector.STEEL, 3_456_789) == 3_456_789
    for sector in (Sector.CEMENT, Sector.ALUMINIUM):
        assert verified_emissions_allocation(table, 2024, sector, 10) == 10
    for year, sector in ((2024, Sector.POWER), (2025, Sector.STEEL)):
        assert reason_of(verified_emissions_allocation, table, year, sector, 1) == (
            "NOT_VERIFIED_EMISSIONS_ALLOCATED"
        )
    steel_2024 = OutputRow("STL-1", 2024, Subtype.STEEL, D(1_900_000))
    assert reason_of(steel_2024.earns, table, OutputUse.TRUE_UP) == "NOT_BENCHMARK_ALLOCATED"
    assert reason_of(verified_emissions_allocation, table, 2024, Sector.STEEL, -1) == (
        "INVALID_EMISSIONS"
    )


def test_a_steel_company_from_2025_is_allocated_by_benchmark(table: BenchmarkTable) -> None:
    """2025 (ILLUSTRATIVE benchmark 1.8 t/t crude steel):
    pre-allocation from 2024 output 1,900,000 t: 0.7 x 1.8 x 1,900,000 = 2,394,000 t;
    final from 2025 output 2,000,000 t: 1.8 x 2,000,000 = 3,600,000 t.
    The same output in 2026 earns 3,600,000 t; in 2027 the table's tighter row
    (ILLUSTRATIVE 1.764) gives 1.764 x 2,000,000 = 3,528,000 t: the table picks the
    row of the compliance year."""
    pre = OutputRow("STL-1", 2024, Subtype.STEEL, D(1_900_000))
    assert pre.earns(table, OutputUse.PRE_ALLOCATION) == 2_394_000
    finals = {
        year: OutputRow("STL-1", year, Subtype.STEEL, D(2_000_000)).earns(table, OutputUse.TRUE_UP)
        for year in (2025, 2026, 2027)
    }
    assert finals == {2025: 3_600_000, 2026: 3_600_000, 2027: 3_528_000}


# == the table format =============================================================


def test_correction_rules_parse_and_bad_ones_are_named() -> None:
    rules = parse_corrections(
        "cooling(cooling_method): AIR -> 1.05 | WATER -> 1; heat_supply(heat_share): 1-0.22*x"
    )
    assert rules["cooling"].value("AIR") == D("1.05")
    assert rules["heat_supply"].value(D("0.5")) == D("0.89")
    assert rules["cooling"].categorical and not rules["heat_supply"].categorical
    for bad in (
        "cooling: AIR -> 1",  # no input
        "cooling(c): 1 | AIR -> 2",  # a default before the last case
        "load(l): x>0.8 -> 1",  # only >= thresholds
        "load(l): 1 +",  # formula ends early
        "load(l): 2/3",  # no division
        "load(l): (1",  # unclosed
        "a(b): 1; a(b): 2",  # twice
    ):
        assert reason_of(parse_corrections, bad) == "INVALID_CORRECTION", bad
    assert Formula("-(1-2)^3*x")(D(2)) == 2  # -(-1)^3 x 2


def test_a_verified_emissions_row_has_no_benchmark_and_a_year_one_method() -> None:
    def make(**changes: Any) -> BenchmarkRow:
        values: dict[str, Any] = {
            "year": 2024,
            "sector": Sector.STEEL,
            "subtype": Subtype.STEEL,
            "benchmark": None,
            "output_unit": "t CO2",
            "method": Method.VERIFIED_EMISSIONS,
        }
        return BenchmarkRow(**{**values, **changes})

    assert make().product is Product.PRODUCT
    assert reason_of(make, benchmark=D("1.8")) == "INVALID_BENCHMARK"
    assert reason_of(make, method=Method.BENCHMARK) == "MISSING_FIELD"
    assert reason_of(make, method="BY_HAND") == "INVALID_METHOD"
    by_benchmark = make(year=2024, benchmark=D("1.8"), method=Method.BENCHMARK)
    assert reason_of(BenchmarkTable, (make(), by_benchmark)) == "DUPLICATE_ROW"
    gas = BenchmarkRow(2024, Sector.POWER, Subtype.GAS, None, "t CO2", method="VERIFIED_EMISSIONS")
    coal = BenchmarkRow(2024, Sector.POWER, COAL_300_PLUS, D("0.8"), "MWh")
    assert reason_of(BenchmarkTable, (gas, coal)) == "MIXED_METHODS"


def test_the_shipped_year_by_year_table(table: BenchmarkTable) -> None:
    assert table.years() == (2019, 2020, 2021, 2022, 2024, 2025, 2026, 2027)
    for year in (2019, 2020, 2021, 2022):
        for subtype in (s for s in Subtype if s.sector is Sector.POWER):
            for product in subtype.products:
                assert table.row(year, Sector.POWER, subtype, product).source
    heat = table.row(2019, Sector.POWER, Subtype.GAS, Product.HEAT)
    assert (heat.benchmark, heat.output_unit) == (D("0.059"), "GJ")
    for year in (2025, 2026, 2027):
        assert table.row(year, Sector.CEMENT, Subtype.CEMENT_CLINKER).source.startswith(
            "ILLUSTRATIVE"
        )


def test_a_table_mixing_methods_in_one_sector_year_is_refused() -> None:
    text = (
        "year,sector,subtype,method,benchmark,output_unit\n"
        "2024,STEEL,STEEL,VERIFIED_EMISSIONS,,t CO2\n"
        "2024,CEMENT,CEMENT_CLINKER,BENCHMARK,0.85,t clinker\n"
    )
    assert len(read_benchmark_table(text)) == 2
    with pytest.raises(RowsInvalid) as raised:
        read_benchmark_table(text.replace("STEEL,VERIFIED_EMISSIONS,,", "STEEL,BENCHMARK,,"))
    assert [(v.field, v.reason) for v in raised.value.violations] == [
        ("rows[0].benchmark", "MISSING_FIELD")
    ]


def test_the_documented_example_files(table: BenchmarkTable) -> None:
    """docs/examples/output-2020.csv, per account (figures of the tests above):
    PWR-SD-0001: U1 2,790,728 + U2 electricity 1,084,340 + U2 heat 504,000 = 4,379,068 t;
    PWR-JS-0002: G1 electricity 294,784 + heat 11,800 = 306,584 t.
    docs/examples/verified-2024.csv: steel and cement allocated their verified emissions."""
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples"
    rows = read_output_data(examples / "output-2020.csv", table, OutputUse.TRUE_UP)
    assert account_targets(rows, table, OutputUse.TRUE_UP) == {
        "PWR-SD-0001": (Sector.POWER, 3, 4_379_068),
        "PWR-JS-0002": (Sector.POWER, 2, 306_584),
    }
    emissions = (examples / "verified-2024.csv").read_text(encoding="utf-8").splitlines()[1:]
    sectors = {"STL": Sector.STEEL, "CEM": Sector.CEMENT}
    for line in emissions:
        account, year, tonnes, _ = line.split(",")
        allocated = verified_emissions_allocation(
            table, int(year), sectors[account[:3]], int(tonnes)
        )
        assert allocated == int(tonnes)

"""Free allocation arithmetic and its CSV tables: exact decimals, floor to whole tonnes.
No I/O beyond the shipped table and tmp_path files."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from registry.cli.benchmark_tables import (
    ILLUSTRATIVE_BENCHMARKS_2025,
    parse_factors,
    read_benchmark_table,
    read_output_data,
)
from registry.domain.accounts import Sector
from registry.domain.allocation import (
    DEFAULT_PRE_ALLOCATION_SHARE,
    AccountAllocation,
    BenchmarkRow,
    BenchmarkTable,
    OutputRow,
    OutputUse,
    Product,
    Subtype,
    TrueUp,
    account_targets,
    final_allocation,
    pre_allocation,
    true_up,
)
from registry.domain.errors import InvalidCommand, RowsInvalid

D = Decimal


def power(
    benchmark: str = "0.8177",
    share: str = "0.7",
    year: int = 2025,
    subtype: Subtype = Subtype.COAL_CONVENTIONAL_300MW_PLUS,
    **factors: str,
) -> BenchmarkRow:
    return BenchmarkRow(
        year,
        Sector.POWER,
        subtype,
        D(benchmark),
        "MWh",
        {name: D(value) for name, value in factors.items()},
        D(share),
    )


def reason_of(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidCommand) as raised:
        call(*args)
    return raised.value.reason


# == arithmetic ==================================================================


def test_final_allocation_is_benchmark_times_output_times_factors_floored() -> None:
    row = power(cooling="1", load="1")
    assert final_allocation(row, D(1_000_000)) == 817_700
    assert final_allocation(row, D(1_000_000), {"cooling": D("1.05")}) == 858_585
    assert final_allocation(
        row, D(1_000_000), {"cooling": D("1.05"), "load": D("1.012")}
    ) == math.floor(Fraction("0.8177") * 1_000_000 * Fraction("1.05") * Fraction("1.012"))
    assert final_allocation(row, 0) == 0


def test_pre_allocation_is_70_percent_of_the_previous_years_output() -> None:
    row = power()
    assert row.pre_allocation_share == DEFAULT_PRE_ALLOCATION_SHARE == D("0.7")
    assert pre_allocation(row, D(1_000_000)) == 572_390  # 572,390.0 exactly
    assert pre_allocation(row, D(1_000_001)) == 572_390  # 572,390.57239
    assert pre_allocation(row, D(1_000_000)) == math.floor(Fraction(7, 10) * 817_700)


def test_the_pre_allocation_share_is_data_on_the_row() -> None:
    assert pre_allocation(power(share="0.6"), D(1_000_000)) == 490_620
    assert pre_allocation(power(share="1"), D(1_000_000)) == 817_700


def test_rounding_is_down_to_whole_tonnes_never_up() -> None:
    row = power(benchmark="1", share="1")
    assert final_allocation(row, D("0.9999")) == 0
    assert final_allocation(row, D("2.5")) == 2
    assert final_allocation(row, D("2.999999999")) == 2
    assert final_allocation(row, D("3")) == 3
    assert final_allocation(row, D("3.000000001")) == 3


def test_arithmetic_is_exact_where_floats_would_lose_a_tonne() -> None:
    row = power(benchmark="0.1")
    assert math.floor(0.7 * 0.1 * 100) == 6  # the float product is 6.999999999999999
    assert pre_allocation(row, D(100)) == 7


def test_arithmetic_is_exact_beyond_the_decimal_context_precision() -> None:
    nines, ones = D("0.999999999999999999"), D("1.000000000000000001")  # product 1 - 1e-36
    assert math.floor(nines * ones) == 1  # Decimal's 28 digits round it up to 1
    assert final_allocation(power(benchmark=str(nines)), ones) == 0
    row = BenchmarkRow(
        2025, Sector.POWER, Subtype.GAS, D("0.123456789012345678"), "MWh", {"k": ones}, nines
    )
    output = D("987654321987654321.123456789")
    assert pre_allocation(row, output) == math.floor(
        Fraction(nines) * Fraction(row.benchmark) * Fraction(output) * Fraction(ones)
    )


def test_factors_default_to_the_tables_values_and_must_be_declared() -> None:
    row = power(cooling="1.05", load="1")
    assert row.resolve_factors() == {"cooling": D("1.05"), "load": D("1")}
    assert row.resolve_factors({"load": D("0.98")}) == {"cooling": D("1.05"), "load": D("0.98")}
    assert final_allocation(row, D(1000)) == math.floor(
        Fraction("0.8177") * 1000 * Fraction("1.05")
    )
    assert reason_of(final_allocation, row, D(1000), {"heat": D(1)}) == "UNKNOWN_CORRECTION_FACTOR"
    assert reason_of(final_allocation, row, D(1000), {"load": D(0)}) == "INVALID_CORRECTION_FACTOR"
    assert reason_of(final_allocation, row, D(1000), {"Load": D(1)}) == "INVALID_CORRECTION_FACTOR"


def test_outputs_are_decimals_or_ints_never_floats_and_never_negative() -> None:
    row = power()
    with pytest.raises(TypeError):
        final_allocation(row, 1000.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        final_allocation(row, D(1), {"cooling": 1.05})  # type: ignore[dict-item]
    assert reason_of(final_allocation, row, D(-1)) == "INVALID_OUTPUT"
    assert reason_of(final_allocation, row, D("NaN")) == "INVALID_OUTPUT"
    assert reason_of(pre_allocation, row, D("Infinity")) == "INVALID_OUTPUT"


def test_a_benchmark_row_checks_itself() -> None:
    def make(**changes: Any) -> BenchmarkRow:
        fields: dict[str, Any] = {
            "year": 2025,
            "sector": Sector.POWER,
            "subtype": Subtype.GAS,
            "benchmark": D("0.39"),
            "output_unit": "MWh",
        }
        return BenchmarkRow(**{**fields, **changes})

    assert make().factors == {}
    assert make(sector="POWER", subtype="GAS") == make()  # plain text is coerced
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sector": Sector.CEMENT}, "SUBTYPE_SECTOR_MISMATCH"),
        ({"benchmark": D(0)}, "INVALID_BENCHMARK"),
        ({"benchmark": D("-0.1")}, "INVALID_BENCHMARK"),
        ({"output_unit": ""}, "INVALID_OUTPUT_UNIT"),
        ({"pre_allocation_share": D(0)}, "INVALID_PRE_ALLOCATION_SHARE"),
        ({"pre_allocation_share": D("1.01")}, "INVALID_PRE_ALLOCATION_SHARE"),
        ({"factors": {"load": D(-1)}}, "INVALID_CORRECTION_FACTOR"),
        ({"year": 2018}, "INVALID_COMPLIANCE_YEAR"),
        ({"sector": "power"}, "INVALID_SECTOR"),
        ({"subtype": "OIL"}, "INVALID_SUBTYPE"),
    ]
    for changes, reason in cases:
        with pytest.raises(InvalidCommand) as raised:
            make(**changes)
        assert raised.value.reason == reason, changes


def test_an_output_row_checks_itself() -> None:
    row = OutputRow("PWR-0001", 2024, "GAS", D(1))  # type: ignore[arg-type]
    assert row.subtype is Subtype.GAS and row.sector is Sector.POWER
    assert reason_of(OutputRow, "p 1", 2024, Subtype.GAS, D(1)) == "INVALID_ACCOUNT_ID"
    assert reason_of(OutputRow, "PWR-0001", 2024, Subtype.GAS, D(-1)) == "INVALID_OUTPUT"
    with pytest.raises(TypeError):
        OutputRow("PWR-0001", 2024, Subtype.GAS, 1.5)  # type: ignore[arg-type]


def test_every_subtype_belongs_to_one_sector() -> None:
    assert {s.sector for s in Subtype} == set(Sector)
    assert [s for s in Subtype if s.sector is Sector.POWER] == [
        Subtype.COAL_CONVENTIONAL_300MW_PLUS,
        Subtype.COAL_CONVENTIONAL_BELOW_300MW,
        Subtype.COAL_UNCONVENTIONAL,
        Subtype.GAS,
    ]


# == true-up =====================================================================


def test_true_up_allocates_more_when_final_exceeds_what_was_given() -> None:
    row = power()
    given = pre_allocation(row, D(1_000_000))
    final = final_allocation(row, D(1_100_000))
    up = true_up(final, given)
    assert up == TrueUp(additional=final - given, to_return=0)
    assert given + up.net == final


def test_true_up_asks_for_units_back_when_output_fell() -> None:
    row = power()
    given = pre_allocation(row, D(1_000_000))
    final = final_allocation(row, D(500_000))
    up = true_up(final, given)
    assert up == TrueUp(additional=0, to_return=given - final) and up.to_return > 0
    assert given + up.net == final


def test_true_up_of_an_exact_match_moves_nothing() -> None:
    assert true_up(572_390, 572_390) == TrueUp(0, 0)
    assert true_up(0, 0).net == 0


def test_true_up_takes_whole_non_negative_tonnes() -> None:
    for final, given in [(-1, 0), (0, -1), (True, 0), (1.0, 0), (D(1), 0)]:
        assert reason_of(true_up, final, given) == "INVALID_QUANTITY"


def test_a_true_up_never_both_allocates_and_returns() -> None:
    with pytest.raises(ValueError):
        TrueUp(additional=1, to_return=1)
    with pytest.raises(ValueError):
        TrueUp(additional=-1)


# == the benchmark table file ====================================================


def test_an_account_earns_the_sum_of_its_rows_each_floored() -> None:
    table = BenchmarkTable((power(cooling="1"), power(subtype=Subtype.GAS, benchmark="0.3901")))
    rows = [
        OutputRow(
            "PWR-0001",
            2024,
            Subtype.COAL_CONVENTIONAL_300MW_PLUS,
            D("1000001"),
            {"cooling": D("1.05")},
            "U1",
        ),
        OutputRow("PWR-0001", 2024, Subtype.GAS, D("10.5"), unit_id="U2"),
        OutputRow("PWR-0002", 2024, Subtype.GAS, D("10.5")),
    ]
    targets = account_targets(rows, table, OutputUse.PRE_ALLOCATION)
    # 0.7 x 0.8177 x 1,000,001 x 1.05 = 601,010.1 -> 601,010; 0.7 x 0.3901 x 10.5 = 2.87 -> 2
    assert targets == {"PWR-0001": (Sector.POWER, 2, 601_010 + 2), "PWR-0002": (Sector.POWER, 1, 2)}
    # the true-up reads the year's own output against the same year's benchmarks
    finals = account_targets(
        [OutputRow("PWR-0002", 2025, Subtype.GAS, D("100"))], table, OutputUse.TRUE_UP
    )
    assert finals == {"PWR-0002": (Sector.POWER, 1, 39)}


@pytest.mark.parametrize(
    ("use", "target", "allocated", "change"),
    [
        (OutputUse.PRE_ALLOCATION, 700, 0, TrueUp(additional=700)),
        (OutputUse.PRE_ALLOCATION, 700, 500, TrueUp(additional=200)),
        (OutputUse.PRE_ALLOCATION, 700, 900, TrueUp()),  # pre-allocation never takes back
        (OutputUse.TRUE_UP, 1_000, 700, TrueUp(additional=300)),
        (OutputUse.TRUE_UP, 600, 700, TrueUp(to_return=100)),
        (OutputUse.TRUE_UP, 700, 700, TrueUp()),
    ],
)
def test_only_the_difference_to_what_the_ledger_holds_moves(
    use: OutputUse, target: int, allocated: int, change: TrueUp
) -> None:
    entry = AccountAllocation("PWR-0001", Sector.POWER, 1, target, allocated, use)
    assert entry.change == change


def test_the_shipped_illustrative_table_parses_fully() -> None:
    table = read_benchmark_table(ILLUSTRATIVE_BENCHMARKS_2025)
    # one row per product line: power subtypes have electricity and heat
    assert len(table) == sum(len(s.products) for s in Subtype) == 11
    assert len(table.digest) == 64
    for subtype in Subtype:
        for product in subtype.products:
            row = table.row(2025, subtype.sector, subtype, product)
            assert row.pre_allocation_share == D("0.7")
            assert all(value == 1 for value in row.factors.values())
            assert row.source.startswith("ILLUSTRATIVE")
    coal = table.row(2025, Sector.POWER, Subtype.COAL_CONVENTIONAL_300MW_PLUS)
    assert coal.product is Product.ELECTRICITY
    assert coal.benchmark is not None and D("0.8") <= coal.benchmark <= D("0.95")
    assert coal.output_unit == "MWh"
    assert set(coal.factors) == {"cooling", "load"} == set(coal.corrections)
    heat = table.row(2025, Sector.POWER, Subtype.COAL_CONVENTIONAL_300MW_PLUS, Product.HEAT)
    assert heat.output_unit == "GJ" and heat.benchmark == D("0.1105")
    gas = table.row(2025, Sector.POWER, Subtype.GAS)
    assert gas.benchmark is not None and D("0.35") <= gas.benchmark <= D("0.42")
    clinker = table.row(2025, Sector.CEMENT, Subtype.CEMENT_CLINKER)
    assert clinker.benchmark == D("0.85") and clinker.factors == {}


def test_a_table_file_without_optional_columns_takes_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks-2026.csv"
    path.write_text(
        "subtype,year,sector,output_unit,benchmark\n"
        "GAS,2026,POWER,MWh,0.3901\n"
        "STEEL,2026,STEEL,t crude steel,1.8\n",
        encoding="utf-8",
    )
    table = read_benchmark_table(path)
    gas = table.row(2026, Sector.POWER, Subtype.GAS)
    assert gas == BenchmarkRow(2026, Sector.POWER, Subtype.GAS, D("0.3901"), "MWh")
    assert gas.pre_allocation_share == D("0.7") and gas.factors == {}
    assert reason_of(table.row, 2025, Sector.POWER, Subtype.GAS) == "NO_BENCHMARK"


HEADER = "year,sector,subtype,benchmark,output_unit,pre_allocation_share,factors\n"


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("2018,POWER,GAS,0.39,MWh,0.7,", "year", "INVALID_COMPLIANCE_YEAR"),
        ("twenty,POWER,GAS,0.39,MWh,0.7,", "year", "INVALID_COMPLIANCE_YEAR"),
        ("2025,power,GAS,0.39,MWh,0.7,", "sector", "INVALID_SECTOR"),
        ("2025,POWER,OIL,0.39,MWh,0.7,", "subtype", "INVALID_SUBTYPE"),
        ("2025,CEMENT,GAS,0.39,MWh,0.7,", "subtype", "SUBTYPE_SECTOR_MISMATCH"),
        ("2025,POWER,GAS,0,MWh,0.7,", "benchmark", "INVALID_BENCHMARK"),
        ('2025,POWER,GAS,"0,39",MWh,0.7,', "benchmark", "INVALID_BENCHMARK"),
        ("2025,POWER,GAS,3.9e-1,MWh,0.7,", "benchmark", "INVALID_BENCHMARK"),
        ("2025,POWER,GAS,0.39,MWh!,0.7,", "output_unit", "INVALID_OUTPUT_UNIT"),
        ("2025,POWER,GAS,0.39,MWh,70%,", "pre_allocation_share", "INVALID_PRE_ALLOCATION_SHARE"),
        ("2025,POWER,GAS,0.39,MWh,1.2,", "pre_allocation_share", "INVALID_PRE_ALLOCATION_SHARE"),
        ("2025,POWER,GAS,0.39,MWh,0,", "pre_allocation_share", "INVALID_PRE_ALLOCATION_SHARE"),
        ("2025,POWER,GAS,0.39,MWh,0.7,heat_supply", "factors", "INVALID_CORRECTION_FACTOR"),
        ("2025,POWER,GAS,0.39,MWh,0.7,heat_supply=0", "factors", "INVALID_CORRECTION_FACTOR"),
        ("2025,POWER,GAS,0.39,MWh,0.7,a=1;a=1", "factors", "INVALID_CORRECTION_FACTOR"),
        ("2025,POWER,GAS,0.39,MWh,0.7,Heat=1", "factors", "INVALID_CORRECTION_FACTOR"),
        ("2025,POWER,GAS,,MWh,0.7,", "benchmark", "MISSING_FIELD"),
        ("2025,POWER,COAL_CONVENTIONAL_300MW_PLUS,0.8,MWh,0.7,", "year", "DUPLICATE_ROW"),
    ],
)
def test_each_bad_table_cell_is_named(line: str, field: str, reason: str) -> None:
    good = "2025,POWER,COAL_CONVENTIONAL_300MW_PLUS,0.8177,MWh,0.7,cooling=1\n"
    with pytest.raises(RowsInvalid) as raised:
        read_benchmark_table(HEADER + good + line + "\n")
    assert [(v.field, v.reason) for v in raised.value.violations] == [(f"rows[1].{field}", reason)]
    assert raised.value.violations[0].description.startswith("line 3: ")


def test_factor_text_is_name_value_pairs() -> None:
    assert parse_factors("cooling=1.05; load = 0.98;") == {"cooling": D("1.05"), "load": D("0.98")}
    assert parse_factors("") == {}


# == output data =================================================================

OUTPUTS = (
    "account_id,year,subtype,output,unit_id,factors\n"
    "PWR-0001,2024,COAL_CONVENTIONAL_300MW_PLUS,5400000.5,U1,cooling=1.05;load=1.012\n"
    "PWR-0001,2024,COAL_CONVENTIONAL_300MW_PLUS,2100000,U2,\n"
    "PWR-0001,2024,GAS,820000,U3,\n"
    "CEM-0042,2024,CEMENT_CLINKER,1250000,,\n"
)


def table_2025() -> BenchmarkTable:
    return read_benchmark_table(ILLUSTRATIVE_BENCHMARKS_2025)


def test_output_data_feeds_pre_allocation_of_the_next_year(tmp_path: Path) -> None:
    path = tmp_path / "outputs-2024.csv"
    path.write_text(OUTPUTS, encoding="utf-8")
    table = table_2025()
    rows = read_output_data(path, table, OutputUse.PRE_ALLOCATION)
    assert rows[0] == OutputRow(
        "PWR-0001",
        2024,
        Subtype.COAL_CONVENTIONAL_300MW_PLUS,
        D("5400000.5"),
        {"cooling": D("1.05"), "load": D("1.012")},
        "U1",
    )
    assert rows[3].unit_id == "" and rows[3].sector is Sector.CEMENT
    quantities = [
        pre_allocation(table.row(2025, r.sector, r.subtype), r.output, r.factors) for r in rows
    ]
    assert quantities == [
        math.floor(
            Fraction("0.7")
            * Fraction("0.8177")
            * Fraction("5400000.5")
            * Fraction("1.05")
            * Fraction("1.012")
        ),
        math.floor(Fraction("0.7") * Fraction("0.8177") * 2_100_000),
        math.floor(Fraction("0.7") * Fraction("0.3901") * 820_000),
        math.floor(Fraction("0.7") * Fraction("0.85") * 1_250_000),
    ]


def test_output_rows_need_a_benchmark_for_the_year_their_use_implies() -> None:
    table = table_2025()
    with pytest.raises(RowsInvalid) as raised:
        read_output_data(OUTPUTS, table, OutputUse.TRUE_UP)  # 2024 outputs, no 2024 table
    assert [(v.field, v.reason) for v in raised.value.violations] == [
        (f"rows[{i}].subtype", "NO_BENCHMARK") for i in range(4)
    ]
    assert read_output_data(OUTPUTS.replace(",2024,", ",2025,"), table, OutputUse.TRUE_UP)


def test_output_rows_may_name_only_the_factors_the_table_declares() -> None:
    text = OUTPUTS.replace("CEMENT_CLINKER,1250000,,", "CEMENT_CLINKER,1250000,,cooling=1")
    with pytest.raises(RowsInvalid) as raised:
        read_output_data(text, table_2025(), OutputUse.PRE_ALLOCATION)
    (violation,) = raised.value.violations
    assert (violation.field, violation.reason) == ("rows[3].factors", "UNKNOWN_CORRECTION_FACTOR")
    assert violation.description.startswith("line 5: ")
    assert read_output_data(text)  # without a table only the file itself is checked


def test_every_bad_output_row_is_reported() -> None:
    text = (
        "account_id,year,subtype,output,unit_id\n"
        "pwr-1,2024,GAS,1,\n"
        "PWR-0002,2024,GAS,-1,\n"
        "PWR-0003,2024,GAS,1,unit 1\n"
        "PWR-0004,2024,GAS,1e3,\n"
        "PWR-0005,2024,GAS,1,A\n"
        "PWR-0005,2024,GAS,2,B\n"
        "PWR-0005,2024,GAS,3,A\n"
    )
    with pytest.raises(RowsInvalid) as raised:
        read_output_data(text)
    assert [(v.field, v.reason) for v in raised.value.violations] == [
        ("rows[0].account_id", "INVALID_ACCOUNT_ID"),
        ("rows[1].output", "INVALID_OUTPUT"),
        ("rows[2].unit_id", "INVALID_ID"),
        ("rows[3].output", "INVALID_OUTPUT"),
        ("rows[6].account_id", "DUPLICATE_ROW"),
    ]


def test_a_table_holds_one_row_per_year_sector_and_subtype() -> None:
    assert reason_of(BenchmarkTable, (power(), power(benchmark="0.9"))) == "DUPLICATE_ROW"
    table = BenchmarkTable((power(), power(year=2026)))
    assert table.row(2026, Sector.POWER, Subtype.COAL_CONVENTIONAL_300MW_PLUS).year == 2026
    assert reason_of(table.row, 2025, Sector.POWER, Subtype.GAS) == "NO_BENCHMARK"

"""Reading the allocation tables: the benchmark table and the per-company output data,
CSV files parsed into ``registry.domain.allocation`` rows (the file formats are in that
module's docstring and ``docs/allocation-tables.md``).

Kept out of the domain, which does no I/O: ``registry allocate`` and the tests read the
files here, the domain only checks the rows and does the arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from importlib.resources import files
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from registry.cli.bulk import Column, Progress, Schema, Source, parse_decimal, parse_int, read_csv
from registry.domain.accounts import check_account_id
from registry.domain.allocation import (
    DEFAULT_PRE_ALLOCATION_SHARE,
    NO_CORRECTIONS,
    NO_FACTORS,
    NO_INPUTS,
    Method,
    OutputUse,
    parse_method,
    parse_product,
    parse_sector,
    parse_subtype,
)
from registry.domain.errors import InvalidCommand, RowsInvalid, Violation
from registry.domain.ids import check_client_id

if TYPE_CHECKING:
    from registry.domain.allocation import (
        BenchmarkRow,
        BenchmarkTable,
        Case,
        Correction,
        Corrections,
        Factors,
        Inputs,
        OutputRow,
    )

ILLUSTRATIVE_BENCHMARKS_2025 = files("registry").joinpath("data/allocation/benchmarks-2025.csv")
"""An ILLUSTRATIVE 2025 table (plausible magnitudes, not the national plan's values)."""

BENCHMARKS_BY_YEAR = files("registry").joinpath("data/allocation/benchmarks-by-year.csv")
"""Year-by-year rows 2019-2027: power by unit category and product line with the plans'
correction rules, steel/cement/aluminium at verified emissions in 2024 and by benchmark
from 2025. Each row's ``source`` says where its figures come from or that they are
ILLUSTRATIVE (see docs/allocation-tables.md)."""


def read_benchmark_table(source: Source, *, on_progress: Progress | None = None) -> BenchmarkTable:
    """Parse a benchmark table file; raise ``RowsInvalid`` naming every bad row."""
    from registry.domain.allocation import BenchmarkTable

    parsed = read_csv(source, BENCHMARK_SCHEMA, on_progress=on_progress)
    return BenchmarkTable(parsed.check(), digest=parsed.digest)


def read_output_data(
    source: Source,
    table: BenchmarkTable | None = None,
    use: OutputUse = OutputUse.TRUE_UP,
    *,
    on_progress: Progress | None = None,
) -> tuple[OutputRow, ...]:
    """Parse an output data file; raise ``RowsInvalid`` naming every bad row.

    With ``table``, also check that every row has a benchmark (for the year ``use``
    implies) and names only factors declared for its subtype, before anything is done.
    """
    parsed = read_csv(source, OUTPUT_SCHEMA, on_progress=on_progress)
    rows = parsed.check()
    if table is not None:
        violations = [
            v
            for index, (row, line) in enumerate(zip(rows, parsed.lines, strict=True))
            for v in _against_table(f"rows[{index}]", line, row, table, use)
        ]
        if violations:
            bad = len({v.field.split(".")[0] for v in violations})
            raise RowsInvalid(
                f"{bad} of {len(rows)} output rows do not match the "
                "benchmark table; nothing was read",
                violations=violations,
            )
    return rows


def parse_factors(text: str) -> Factors:
    """``name=value;name=value`` (a trailing ``;`` is allowed) to positive decimals."""
    from registry.domain.allocation import FACTOR_NAME, check_factors

    factors: dict[str, Decimal] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, equals, value = (piece.strip() for piece in item.partition("="))
        if not equals or not FACTOR_NAME.match(name):
            raise InvalidCommand(
                f"correction factor {item!r} is not name=value with a lower_snake name",
                reason="INVALID_CORRECTION_FACTOR",
            )
        if name in factors:
            raise InvalidCommand(
                f"correction factor {name} is given twice", reason="INVALID_CORRECTION_FACTOR"
            )
        factors[name] = parse_decimal(
            value, reason="INVALID_CORRECTION_FACTOR", what=f"correction factor {name}"
        )
    return check_factors(factors)


def parse_inputs(text: str) -> Inputs:
    """``name=value;...``: what a unit reports for its corrections, each value a decimal
    (``load_rate=0.78``) or a category (``cooling_method=AIR``)."""
    from registry.domain.allocation import CATEGORY, FACTOR_NAME, check_inputs

    inputs: dict[str, Decimal | str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, equals, value = (piece.strip() for piece in item.partition("="))
        if not equals or not FACTOR_NAME.match(name):
            raise InvalidCommand(
                f"input {item!r} is not name=value with a lower_snake name",
                reason="INVALID_CORRECTION_INPUT",
            )
        if name in inputs:
            raise InvalidCommand(f"input {name} is given twice", reason="INVALID_CORRECTION_INPUT")
        inputs[name] = (
            value
            if CATEGORY.match(value)
            else parse_decimal(value, reason="INVALID_CORRECTION_INPUT", what=f"input {name}")
        )
    return check_inputs(inputs)


def parse_corrections(text: str) -> Corrections:
    """``factor(input): WHEN -> formula | ... | formula; ...`` (docs/allocation-tables.md).

    WHEN is a category (``AIR``) or a threshold ``x>=0.85``; cases are tried in order, a
    last case without WHEN covers the rest; formulas are in ``x``, the input's value.
    """
    from registry.domain.allocation import FACTOR_NAME, Correction

    corrections: dict[str, Correction] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        head, colon, rule = item.partition(":")
        name, paren, rest = head.strip().partition("(")
        name, input_name = name.strip(), rest.removesuffix(")").strip()
        if not (colon and paren and rest.endswith(")") and FACTOR_NAME.match(name)):
            raise InvalidCommand(
                f"correction {item!r} is not 'factor(input): cases'", reason="INVALID_CORRECTION"
            )
        if name in corrections:
            raise InvalidCommand(f"correction {name} is given twice", reason="INVALID_CORRECTION")
        corrections[name] = Correction(input_name, tuple(_case(c) for c in rule.split("|")))
    return MappingProxyType(corrections)


def _case(text: str) -> Case:
    from registry.domain.allocation import CATEGORY, Case, Formula

    when, arrow, formula = (part.strip() for part in text.partition("->"))
    if not arrow:
        return Case(None, Formula(text))
    if CATEGORY.match(when):
        return Case(when, Formula(formula))
    threshold = when.replace(" ", "")
    if not threshold.startswith("x>="):
        raise InvalidCommand(
            f"case {text.strip()!r}: WHEN is a category like AIR or a threshold x>=0.85",
            reason="INVALID_CORRECTION",
        )
    bound = parse_decimal(threshold[3:], reason="INVALID_CORRECTION", what="threshold")
    return Case(bound, Formula(formula))


def _against_table(
    name: str, line: int, row: OutputRow, table: BenchmarkTable, use: OutputUse
) -> list[Violation]:
    try:
        row.benchmark_row(table, use)
    except InvalidCommand as error:
        return [
            Violation(
                f"{name}.{error.metadata.get('field', 'subtype')}",
                error.reason,
                f"line {line}: {error.message}",
            )
        ]
    return []


def _year(text: str) -> int:
    from registry.domain.obligations import check_year

    return check_year(parse_int(text, reason="INVALID_COMPLIANCE_YEAR", what="year"))


def _benchmark(text: str) -> Decimal:
    value = parse_decimal(text, reason="INVALID_BENCHMARK", what="benchmark")
    if value <= 0:
        raise InvalidCommand(f"benchmark {text} must be positive", reason="INVALID_BENCHMARK")
    return value


def _share(text: str) -> Decimal:
    value = parse_decimal(text, reason="INVALID_PRE_ALLOCATION_SHARE", what="pre-allocation share")
    if not 0 < value <= 1:
        raise InvalidCommand(
            f"pre-allocation share {text} must be in (0, 1]", reason="INVALID_PRE_ALLOCATION_SHARE"
        )
    return value


def _output_unit(text: str) -> str:
    from registry.domain.allocation import OUTPUT_UNIT

    if not OUTPUT_UNIT.match(text):
        raise InvalidCommand(
            f"output unit {text!r} must be 1-32 of letters, digits, spaces and './_-'",
            reason="INVALID_OUTPUT_UNIT",
        )
    return text


def _output_text(text: str) -> Decimal:
    value = parse_decimal(text, reason="INVALID_OUTPUT", what="output")
    if value < 0:
        raise InvalidCommand(f"output {text} must not be negative", reason="INVALID_OUTPUT")
    return value


def _source(text: str) -> str:
    if len(text) > 200:
        raise InvalidCommand("source is longer than 200 characters", reason="INVALID_SOURCE")
    return text


def _benchmark_row(values: Mapping[str, Any]) -> BenchmarkRow:
    from registry.domain.allocation import BenchmarkRow

    return BenchmarkRow(**values)


def _output_row(values: Mapping[str, Any]) -> OutputRow:
    from registry.domain.allocation import OutputRow

    return OutputRow(**values)


def _unit_id(text: str) -> str:
    return check_client_id(text, "unit id")


BENCHMARK_SCHEMA: Schema[BenchmarkRow] = Schema(
    columns=(
        Column("year", _year),
        Column("sector", parse_sector),
        Column("subtype", parse_subtype),
        Column("product", parse_product, required=False, default=None),
        Column("method", parse_method, required=False, default=Method.BENCHMARK),
        Column("benchmark", _benchmark, required=False, default=None),
        Column("output_unit", _output_unit),
        Column(
            "pre_allocation_share", _share, required=False, default=DEFAULT_PRE_ALLOCATION_SHARE
        ),
        Column("factors", parse_factors, required=False, default=NO_FACTORS),
        Column("corrections", parse_corrections, required=False, default=NO_CORRECTIONS),
        Column("source", _source, required=False, default=""),
    ),
    make=_benchmark_row,
    key=("year", "sector", "subtype", "product"),
)
"""The benchmark table file (see the module docstring and docs/allocation-tables.md)."""

OUTPUT_SCHEMA: Schema[OutputRow] = Schema(
    columns=(
        Column("account_id", check_account_id),
        Column("year", _year),
        Column("subtype", parse_subtype),
        Column("product", parse_product, required=False, default=None),
        Column("output", _output_text),
        Column("unit_id", _unit_id, required=False, default=""),
        Column("factors", parse_factors, required=False, default=NO_FACTORS),
        Column("inputs", parse_inputs, required=False, default=NO_INPUTS),
    ),
    make=_output_row,
    key=("account_id", "year", "subtype", "unit_id", "product"),
    max_rows=100_000,
)
"""The per-company output data file: one row per (account, output year, subtype, unit,
product line)."""

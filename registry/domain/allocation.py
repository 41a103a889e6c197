"""Free allocation arithmetic: intensity benchmarks, pre-allocation and true-up.

Allocation is intensity based: ``benchmark (tCO2 per unit of output) x output x
correction factors``, with one benchmark per (year, sector, subtype). For allocation
year Y a covered entity is first pre-allocated ``pre_allocation_share`` (0.7 unless the
table says otherwise) of ``benchmark(Y) x output(Y-1) x factors``; once its output of
Y is verified, the final allocation is ``benchmark(Y) x output(Y) x factors`` and the
true-up hands out the difference, or asks for it back (``ALLOCATION_RETURN``).

**Exact arithmetic.** Benchmarks, shares, factors and outputs are decimal text parsed
straight to ``Decimal`` (a float is refused); the product is taken as a ``Fraction``, so
no decimal context can round it, and it is rounded exactly once.

**Rounding rule: down to whole tonnes (floor), once per row** (one row = one account,
subtype and generating unit). Units are whole tonnes; rounding down never hands out a
tonne the formula did not earn, so the allocations never add up to more than the plan
sized the cap for (each row withholds less than 1 t). The true-up is the exact
difference of two whole numbers, so pre-allocation + true-up == final allocation.

**Tables are data.** Benchmarks, output units, the named correction factors a subtype
uses (with their defaults) and the pre-allocation share are read from CSV files (see
``docs/allocation-tables.md``) by ``registry.cli.benchmark_tables``: this module holds
no I/O, only the rows and the arithmetic. Benchmark table, one row per (year, sector, subtype)::

    year,sector,subtype,benchmark,output_unit,pre_allocation_share,factors
    2025,POWER,COAL_CONVENTIONAL_300MW_PLUS,0.8177,MWh,0.7,cooling=1;heat_supply=1;load=1

``pre_allocation_share`` and ``factors`` are optional (0.7; none). ``factors`` is
``name=value;name=value``: the factors this subtype applies and their defaults. Output
data, one row per (account, year, subtype, unit), ``year`` being the year of output::

    account_id,year,subtype,output,unit_id,factors
    PWR-0001,2024,COAL_CONVENTIONAL_300MW_PLUS,5400000.5,U1,cooling=1.05;load=1.012

``unit_id`` and ``factors`` are optional; a factor the row omits takes the table's
default, a factor the table does not declare for the subtype is an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType

from registry.domain.accounts import Sector, check_account_id
from registry.domain.errors import InvalidCommand
from registry.domain.ids import check_client_id
from registry.domain.obligations import check_year


class Subtype(StrEnum):
    """What a benchmark applies to: a kind of generating unit or a product."""

    COAL_CONVENTIONAL_300MW_PLUS = "COAL_CONVENTIONAL_300MW_PLUS"
    COAL_CONVENTIONAL_BELOW_300MW = "COAL_CONVENTIONAL_BELOW_300MW"
    COAL_UNCONVENTIONAL = "COAL_UNCONVENTIONAL"
    GAS = "GAS"
    STEEL = "STEEL"
    CEMENT_CLINKER = "CEMENT_CLINKER"
    ALUMINIUM = "ALUMINIUM"

    @property
    def sector(self) -> Sector:
        return SUBTYPE_SECTORS[self]


SUBTYPE_SECTORS: Mapping[Subtype, Sector] = MappingProxyType(
    {
        Subtype.COAL_CONVENTIONAL_300MW_PLUS: Sector.POWER,
        Subtype.COAL_CONVENTIONAL_BELOW_300MW: Sector.POWER,
        Subtype.COAL_UNCONVENTIONAL: Sector.POWER,
        Subtype.GAS: Sector.POWER,
        Subtype.STEEL: Sector.STEEL,
        Subtype.CEMENT_CLINKER: Sector.CEMENT,
        Subtype.ALUMINIUM: Sector.ALUMINIUM,
    }
)

DEFAULT_PRE_ALLOCATION_SHARE = Decimal("0.7")
"""The share of the previous year's output pre-allocated when a table row gives none."""

Factors = Mapping[str, Decimal]
NO_FACTORS: Factors = MappingProxyType({})
FACTOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
OUTPUT_UNIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ./_-]{0,31}\Z")


@dataclass(frozen=True)
class BenchmarkRow:
    """One benchmark: tCO2 per ``output_unit`` for (year, sector, subtype).

    ``factors`` names the correction factors this subtype applies, each with the value
    used when a company's output row does not give it.
    """

    year: int
    sector: Sector
    subtype: Subtype
    benchmark: Decimal
    output_unit: str
    factors: Factors = field(default_factory=lambda: NO_FACTORS, hash=False)
    pre_allocation_share: Decimal = DEFAULT_PRE_ALLOCATION_SHARE

    def __post_init__(self) -> None:
        check_year(self.year)
        object.__setattr__(self, "sector", parse_sector(self.sector))
        object.__setattr__(self, "subtype", parse_subtype(self.subtype))
        if self.subtype.sector is not self.sector:
            raise InvalidCommand(
                f"subtype {self.subtype} belongs to {self.subtype.sector}, not {self.sector}",
                reason="SUBTYPE_SECTOR_MISMATCH",
                field="subtype",
            )
        if not _positive(self.benchmark):
            raise InvalidCommand(
                f"benchmark {self.benchmark} must be a positive decimal",
                reason="INVALID_BENCHMARK",
                field="benchmark",
            )
        if not OUTPUT_UNIT.match(self.output_unit):
            raise InvalidCommand(
                f"output unit {self.output_unit!r} must be 1-32 of letters, "
                "digits, spaces and './_-'",
                reason="INVALID_OUTPUT_UNIT",
                field="output_unit",
            )
        share = self.pre_allocation_share
        if not (_positive(share) and share <= 1):
            raise InvalidCommand(
                f"pre-allocation share {share} must be in (0, 1]",
                reason="INVALID_PRE_ALLOCATION_SHARE",
                field="pre_allocation_share",
            )
        object.__setattr__(self, "factors", check_factors(self.factors))

    @property
    def key(self) -> tuple[int, Sector, Subtype]:
        return self.year, self.sector, self.subtype

    def resolve_factors(self, given: Factors | None = None) -> Factors:
        """The factors to apply: the table's defaults overridden by the ones ``given``."""
        given = check_factors(given or NO_FACTORS)
        unknown = sorted(set(given) - set(self.factors))
        if unknown:
            declared = ", ".join(self.factors) or "none"
            raise InvalidCommand(
                f"{self.subtype} in {self.year} has no correction factor "
                f"{', '.join(unknown)} (declared: {declared})",
                reason="UNKNOWN_CORRECTION_FACTOR",
                field="factors",
            )
        return MappingProxyType({**self.factors, **given})


@dataclass(frozen=True)
class BenchmarkTable:
    """Benchmark rows keyed by (year, sector, subtype); ``digest`` is the source file's."""

    rows: tuple[BenchmarkRow, ...]
    digest: str = ""
    _index: Mapping[tuple[int, Sector, Subtype], BenchmarkRow] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[int, Sector, Subtype], BenchmarkRow] = {}
        for row in self.rows:
            if row.key in index:
                raise InvalidCommand(
                    f"two benchmarks for {row.year} {row.subtype}", reason="DUPLICATE_ROW"
                )
            index[row.key] = row
        object.__setattr__(self, "_index", MappingProxyType(index))

    def row(self, year: int, sector: Sector, subtype: Subtype) -> BenchmarkRow:
        found = self._index.get((year, sector, subtype))
        if found is None:
            raise InvalidCommand(
                f"no benchmark for {year} {sector} {subtype}",
                reason="NO_BENCHMARK",
                field="subtype",
            )
        return found

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class OutputRow:
    """One generating unit's (or plant's) output of one year, with its own factor values."""

    account_id: str
    year: int
    subtype: Subtype
    output: Decimal
    factors: Factors = field(default_factory=lambda: NO_FACTORS, hash=False)
    unit_id: str = ""

    def __post_init__(self) -> None:
        check_account_id(self.account_id)
        check_year(self.year)
        object.__setattr__(self, "subtype", parse_subtype(self.subtype))
        _output(self.output)
        if self.unit_id:
            check_client_id(self.unit_id, "unit id")
        object.__setattr__(self, "factors", check_factors(self.factors))

    @property
    def sector(self) -> Sector:
        return self.subtype.sector


@dataclass(frozen=True)
class TrueUp:
    """What the true-up moves: ``additional`` by ALLOCATION, ``to_return`` by
    ALLOCATION_RETURN. At most one is non-zero; both are zero when nothing moves."""

    additional: int = 0
    to_return: int = 0

    def __post_init__(self) -> None:
        for value in (self.additional, self.to_return):
            if type(value) is not int or value < 0:
                raise ValueError(f"true-up quantities are whole tonnes >= 0, got {value!r}")
        if self.additional and self.to_return:
            raise ValueError("a true-up either allocates more or takes some back, not both")

    @property
    def net(self) -> int:
        """Signed change to the allocation: positive to allocate, negative to return."""
        return self.additional - self.to_return


def pre_allocation(
    row: BenchmarkRow, previous_output: Decimal | int, factors: Factors | None = None
) -> int:
    """Share (0.7) x benchmark x the previous year's output x factors, floored to tonnes."""
    return _allocate(row, previous_output, factors, row.pre_allocation_share)


def final_allocation(
    row: BenchmarkRow, actual_output: Decimal | int, factors: Factors | None = None
) -> int:
    """Benchmark x the year's verified output x factors, floored to tonnes."""
    return _allocate(row, actual_output, factors, Decimal(1))


def true_up(final: int, already_allocated: int) -> TrueUp:
    """The difference between the final allocation and what was already allocated."""
    for what, value in (("final allocation", final), ("already allocated", already_allocated)):
        if type(value) is not int or value < 0:
            raise InvalidCommand(
                f"{what} must be whole tonnes >= 0, got {value!r}", reason="INVALID_QUANTITY"
            )
    difference = final - already_allocated
    return TrueUp(additional=max(difference, 0), to_return=max(-difference, 0))


class OutputUse(StrEnum):
    """What output data feeds, which fixes the benchmark year it is checked against."""

    PRE_ALLOCATION = "PRE_ALLOCATION"
    """Output of year Y-1 pre-allocates year Y: benchmark year = output year + 1."""
    TRUE_UP = "TRUE_UP"
    """Verified output of year Y finalises year Y: benchmark year = output year."""

    def benchmark_year(self, output_year: int) -> int:
        return output_year + 1 if self is OutputUse.PRE_ALLOCATION else output_year


@dataclass(frozen=True)
class AccountAllocation:
    """One account's allocation for a year: what its output earns (``target``, the sum of
    its rows, each floored), what the ledger already allocated, and what moves now."""

    account_id: str
    sector: Sector
    rows: int
    target: int
    allocated: int
    use: OutputUse

    @property
    def change(self) -> TrueUp:
        """Pre-allocation tops up to the target and never takes back (an account already
        given more keeps it until the true-up); the true-up settles the difference."""
        if self.use is OutputUse.PRE_ALLOCATION:
            return TrueUp(additional=max(self.target - self.allocated, 0))
        return true_up(self.target, self.allocated)


def account_targets(
    rows: Iterable[OutputRow], table: BenchmarkTable, use: OutputUse
) -> dict[str, tuple[Sector, int, int]]:
    """(sector, output rows, target tonnes) per account, rows in file order.

    Each row is floored on its own (the rounding rule), then an account's rows are
    summed, so splitting a plant into units never earns a tonne its rows did not.
    """
    targets: dict[str, tuple[Sector, int, int]] = {}
    for row in rows:
        benchmark = table.row(use.benchmark_year(row.year), row.sector, row.subtype)
        earned = (
            pre_allocation(benchmark, row.output, row.factors)
            if use is OutputUse.PRE_ALLOCATION
            else final_allocation(benchmark, row.output, row.factors)
        )
        sector, count, total = targets.get(row.account_id, (row.sector, 0, 0))
        targets[row.account_id] = (sector, count + 1, total + earned)
    return targets


# == validation ==================================================================


def _allocate(
    row: BenchmarkRow, output: Decimal | int, factors: Factors | None, share: Decimal
) -> int:
    product = Fraction(share) * Fraction(row.benchmark) * Fraction(_output(output))
    for value in row.resolve_factors(factors).values():
        product *= Fraction(value)
    return math.floor(product)


def _output(value: Decimal | int) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"output must be a Decimal or int (never a float), got {value!r}")
    if not (Decimal(value).is_finite() and value >= 0):
        raise InvalidCommand(
            f"output {value} must be a decimal >= 0", reason="INVALID_OUTPUT", field="output"
        )
    return Decimal(value)


def _positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"expected a Decimal or int (never a float), got {value!r}")
    return Decimal(value).is_finite() and value > 0


def check_factors(factors: Factors) -> Factors:
    for name, value in factors.items():
        if not FACTOR_NAME.match(name):
            raise InvalidCommand(
                f"correction factor name {name!r} is not lower_snake",
                reason="INVALID_CORRECTION_FACTOR",
                field="factors",
            )
        if not _positive(value):
            raise InvalidCommand(
                f"correction factor {name}={value} must be positive",
                reason="INVALID_CORRECTION_FACTOR",
                field="factors",
            )
    return MappingProxyType(dict(factors))


def parse_sector(text: str) -> Sector:
    if text not in Sector.__members__:
        raise InvalidCommand(
            f"sector {text!r} must be one of {', '.join(Sector)}", reason="INVALID_SECTOR"
        )
    return Sector(text)


def parse_subtype(text: str) -> Subtype:
    if text not in Subtype.__members__:
        raise InvalidCommand(
            f"subtype {text!r} must be one of {', '.join(Subtype)}", reason="INVALID_SUBTYPE"
        )
    return Subtype(text)

"""Free allocation arithmetic: intensity benchmarks, pre-allocation and true-up.

Allocation is intensity based: ``benchmark (tCO2 per unit of output) x output x
correction factors``, with one benchmark per (year, sector, subtype, product line). For allocation
year Y a covered entity is first pre-allocated ``pre_allocation_share`` (0.7 unless the
table says otherwise) of ``benchmark(Y) x output(Y-1) x factors``; once its output of
Y is verified, the final allocation is ``benchmark(Y) x output(Y) x factors`` and the
true-up hands out the difference, or asks for it back (``ALLOCATION_RETURN``).

**Exact arithmetic.** Benchmarks, shares, factors and outputs are decimal text parsed
straight to ``Decimal`` (a float is refused); the product is taken as a ``Fraction``, so
no decimal context can round it, and it is rounded exactly once. (One exception, a
correction formula's power with a fractional exponent, is taken to ``POWER_PRECISION``
digits before the product.)

**Rounding rule: down to whole tonnes (floor), once per row** (one row = one account,
subtype, generating unit and product line). Units are whole tonnes; rounding down never hands out a
tonne the formula did not earn, so the allocations never add up to more than the plan
sized the cap for (each row withholds less than 1 t). The true-up is the exact
difference of two whole numbers, so pre-allocation + true-up == final allocation.

**Tables are data.** Benchmarks, output units, the named correction factors a subtype
uses (with their defaults) and the pre-allocation share are read from CSV files (see
``docs/allocation-tables.md``) by ``registry.cli.benchmark_tables``: this module holds
no I/O, only the rows and the arithmetic. Benchmark table, one row per (year, sector,
subtype, product) (the former columns; the newer ones below)::

    year,sector,subtype,benchmark,output_unit,pre_allocation_share,factors
    2025,POWER,COAL_CONVENTIONAL_300MW_PLUS,0.8177,MWh,0.7,cooling=1;heat_supply=1;load=1

``pre_allocation_share`` and ``factors`` are optional (0.7; none). ``factors`` is
``name=value;name=value``: the factors this subtype applies and their defaults. Output
data, one row per (account, year, subtype, unit), ``year`` being the year of output::

    account_id,year,subtype,output,unit_id,factors
    PWR-0001,2024,COAL_CONVENTIONAL_300MW_PLUS,5400000.5,U1,cooling=1.05;load=1.012

``unit_id`` and ``factors`` are optional; a factor the row omits takes the table's
default, a factor the table does not declare for the subtype is an error.

**Product lines** (China's power plans: a unit's allocation = electricity supplied x
electricity benchmark x corrections + heat supplied x heat benchmark): a benchmark row
and an output row name a ``product`` (``ELECTRICITY`` or ``HEAT`` for power, ``PRODUCT``
for the industrial sectors; empty = the subtype's main product), so a combined heat and
power unit has one output row per product line, each floored, summed per account.

**Corrections** derive a factor from what the unit reports (its ``inputs``: cooling
method, heat share, load rate), by rules the *table* holds (never this code), e.g.
``cooling(cooling_method): AIR -> 1.05 | WATER -> 1`` or
``load(load_rate): x>=0.85 -> 1 | 1.015^(16-20*x)``. A factor's value is the output
row's explicit factor, else the correction of its input, else the table's default.

**Method**: a row whose ``method`` is ``VERIFIED_EMISSIONS`` says the sector's year is
allocated at its verified emissions (steel, cement, aluminium in 2024), not by benchmark.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType
from typing import Any, NoReturn

from registry.domain.accounts import Sector, check_account_id
from registry.domain.errors import InvalidCommand
from registry.domain.ids import check_client_id
from registry.domain.obligations import check_year


class Product(StrEnum):
    """A product line a benchmark applies to (power units have two)."""

    ELECTRICITY = "ELECTRICITY"
    """Electricity supplied, MWh."""
    HEAT = "HEAT"
    """Heat supplied, GJ."""
    PRODUCT = "PRODUCT"
    """The industrial sectors' one product (crude steel, clinker, aluminium)."""


class Method(StrEnum):
    """How a (year, sector, subtype) is allocated."""

    BENCHMARK = "BENCHMARK"
    VERIFIED_EMISSIONS = "VERIFIED_EMISSIONS"
    """Allocation = verified emissions (MEE Work Plan of 26 March 2025, 2024 year)."""


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

    @property
    def products(self) -> tuple[Product, ...]:
        """The product lines of this subtype, the main one first."""
        if self.sector is Sector.POWER:
            return (Product.ELECTRICITY, Product.HEAT)
        return (Product.PRODUCT,)

    def product(self, given: Product | str | None) -> Product:
        """``given`` checked against this subtype's lines; empty = the main product."""
        if not given:
            return self.products[0]
        product = parse_product(given)
        if product not in self.products:
            raise InvalidCommand(
                f"{self} has no {product} line (its lines: {', '.join(self.products)})",
                reason="SUBTYPE_PRODUCT_MISMATCH",
                field="product",
            )
        return product


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

Inputs = Mapping[str, "Decimal | str"]
NO_INPUTS: Inputs = MappingProxyType({})
CATEGORY = re.compile(r"^[A-Z][A-Z0-9_]{0,31}\Z")
POWER_PRECISION = 28
"""Significant digits of a power with a fractional exponent (``1.015^(16-20*x)``),
correctly rounded (``decimal``); every other formula is exact."""


class Formula:
    """An arithmetic expression in ``x``: decimals, ``+ - * ^``, parentheses, unary minus.

    Parsed once (a precise ``INVALID_CORRECTION`` on bad text), evaluated exactly as a
    ``Fraction``, except ``a^b`` with a fractional or negative exponent, taken to
    ``POWER_PRECISION`` digits. No division: the plans' formulas need none, and every
    value then stays a terminating decimal.
    """

    _TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|(x)|([-+*^()]))")

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self._tokens = self._tokenise(self.text)
        self._at = 0
        self._tree = self._sum()
        if self._at != len(self._tokens):
            self._fail(f"unexpected {self._tokens[self._at]!r}")
        del self._tokens

    def __repr__(self) -> str:
        return f"Formula({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Formula) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __call__(self, x: Decimal) -> Fraction:
        return _evaluate(self._tree, Fraction(x))

    def _fail(self, why: str) -> NoReturn:
        raise InvalidCommand(
            f"formula {self.text!r}: {why}", reason="INVALID_CORRECTION", field="corrections"
        )

    def _tokenise(self, text: str) -> list[str]:
        tokens, at = [], 0
        while at < len(text):
            match = self._TOKEN.match(text, at)
            if match is None or match.end() == at:
                if not text[at:].strip():
                    break
                self._fail(f"cannot read {text[at:]!r}")
            tokens.append(next(g for g in match.groups() if g is not None))
            at = match.end()
        if not tokens:
            self._fail("empty")
        return tokens

    def _peek(self) -> str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            self._fail("ends too early")
        self._at += 1
        return token

    def _sum(self) -> _Node:
        node = self._product()
        while self._peek() in ("+", "-"):
            node = (self._take(), node, self._product())
        return node

    def _product(self) -> _Node:
        node = self._power()
        while self._peek() == "*":
            node = (self._take(), node, self._power())
        return node

    def _power(self) -> _Node:
        node = self._unary()
        if self._peek() == "^":
            node = (self._take(), node, self._power())
        return node

    def _unary(self) -> _Node:
        if self._peek() == "-":
            self._take()
            return ("neg", self._unary(), None)
        token = self._take()
        if token == "(":
            node = self._sum()
            if self._take() != ")":
                self._fail("a '(' is not closed")
            return node
        if token == "x":
            return "x"
        if not token[0].isdigit():
            self._fail(f"unexpected {token!r}")
        return Fraction(Decimal(token))


_Node = Any  # Fraction | "x" | (operator, left, right)


def _evaluate(node: _Node, x: Fraction) -> Fraction:
    if isinstance(node, Fraction):
        return node
    if node == "x":
        return x
    operator, left, right = node
    a = _evaluate(left, x)
    if operator == "neg":
        return -a
    b = _evaluate(right, x)
    if operator == "+":
        return a + b
    if operator == "-":
        return a - b
    if operator == "*":
        return a * b
    if b.denominator == 1 and b >= 0:
        return a ** int(b)
    if a <= 0:
        raise InvalidCommand(
            f"a power of {a} with exponent {b} is not a real number",
            reason="INVALID_CORRECTION_FACTOR",
            field="inputs",
        )
    with localcontext() as context:
        context.prec = POWER_PRECISION
        base = Decimal(a.numerator) / Decimal(a.denominator)
        exponent = Decimal(b.numerator) / Decimal(b.denominator)
        return Fraction(base**exponent)


@dataclass(frozen=True)
class Case:
    """One case of a correction: ``when`` a category (``AIR``), a threshold (``x >=
    when``), or ``None`` (otherwise); the factor is ``formula(x)``."""

    when: str | Decimal | None
    formula: Formula

    def matches(self, value: Decimal | str) -> bool:
        if self.when is None:
            return True
        if isinstance(self.when, str):
            return value == self.when
        return isinstance(value, Decimal) and value >= self.when


@dataclass(frozen=True)
class Correction:
    """A factor derived from one reported input by the first case that matches."""

    input: str
    cases: tuple[Case, ...]

    def __post_init__(self) -> None:
        if not FACTOR_NAME.match(self.input):
            raise InvalidCommand(
                f"input name {self.input!r} is not lower_snake",
                reason="INVALID_CORRECTION",
                field="corrections",
            )
        if not self.cases or any(c.when is None for c in self.cases[:-1]):
            raise InvalidCommand(
                f"correction of {self.input}: cases are 'WHEN -> formula' separated by '|', "
                "a case without WHEN only last",
                reason="INVALID_CORRECTION",
                field="corrections",
            )

    @property
    def categorical(self) -> bool:
        return any(isinstance(c.when, str) for c in self.cases)

    def value(self, given: Decimal | str) -> Decimal:
        """The factor for the reported ``given`` value, a positive decimal."""
        if self.categorical != isinstance(given, str):
            kind = "a category like AIR" if self.categorical else "a decimal"
            raise InvalidCommand(
                f"{self.input}={given} must be {kind}",
                reason="INVALID_CORRECTION_INPUT",
                field="inputs",
            )
        case = next((c for c in self.cases if c.matches(given)), None)
        if case is None:
            raise InvalidCommand(
                f"no case of the {self.input} correction covers {given}",
                reason="INVALID_CORRECTION_INPUT",
                field="inputs",
            )
        x = Decimal(0) if isinstance(given, str) else given
        exact = case.formula(x)
        if exact <= 0:
            raise InvalidCommand(
                f"the {self.input} correction gives {float(exact):.6g} for {given}: "
                "a factor must be positive",
                reason="INVALID_CORRECTION_FACTOR",
                field="inputs",
            )
        return _decimal(exact)


Corrections = Mapping[str, Correction]
NO_CORRECTIONS: Corrections = MappingProxyType({})


def _decimal(value: Fraction) -> Decimal:
    """An exact Decimal for a Fraction whose denominator has only 2s and 5s (all these
    formulas give), else one correctly rounded to POWER_PRECISION digits."""
    with localcontext() as context:
        context.prec = 200
        quotient = Decimal(value.numerator) / Decimal(value.denominator)
    if Fraction(quotient) == value:
        return quotient
    with localcontext() as context:
        context.prec = POWER_PRECISION
        return Decimal(value.numerator) / Decimal(value.denominator)


@dataclass(frozen=True)
class BenchmarkRow:
    """One benchmark: tCO2 per ``output_unit`` for (year, sector, subtype, product).

    ``factors`` names the correction factors this line applies, each with the value
    used when a company's output row gives neither the factor nor the input of its
    ``corrections`` rule. A ``VERIFIED_EMISSIONS`` row has no benchmark: the sector's
    year is allocated at verified emissions.
    """

    year: int
    sector: Sector
    subtype: Subtype
    benchmark: Decimal | None
    output_unit: str
    factors: Factors = field(default_factory=lambda: NO_FACTORS, hash=False)
    pre_allocation_share: Decimal = DEFAULT_PRE_ALLOCATION_SHARE
    product: Product | None = None
    corrections: Corrections = field(default_factory=lambda: NO_CORRECTIONS, hash=False)
    method: Method = Method.BENCHMARK
    source: str = field(default="", compare=False)

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
        object.__setattr__(self, "product", self.subtype.product(self.product))
        object.__setattr__(self, "method", parse_method(self.method))
        if self.method is Method.VERIFIED_EMISSIONS:
            if self.benchmark is not None or self.factors or self.corrections:
                raise InvalidCommand(
                    "a VERIFIED_EMISSIONS row has no benchmark, factors or corrections",
                    reason="INVALID_BENCHMARK",
                    field="benchmark",
                )
        elif self.benchmark is None:
            raise InvalidCommand("benchmark is empty", reason="MISSING_FIELD", field="benchmark")
        elif not _positive(self.benchmark):
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
        object.__setattr__(self, "corrections", MappingProxyType(dict(self.corrections)))
        for name in self.corrections:
            check_factors({name: Decimal(1)})

    @property
    def key(self) -> tuple[int, Sector, Subtype, Product]:
        assert self.product is not None  # set by __post_init__
        return self.year, self.sector, self.subtype, self.product

    def resolve_factors(
        self, given: Factors | None = None, inputs: Inputs | None = None
    ) -> Factors:
        """The factors to apply: the table's defaults, overridden by the corrections of
        the ``inputs`` the unit reports, overridden by the factors ``given`` outright."""
        given = check_factors(given or NO_FACTORS)
        inputs = inputs or NO_INPUTS
        declared = set(self.factors) | set(self.corrections)
        unknown = sorted(set(given) - declared)
        if unknown:
            raise InvalidCommand(
                f"{self.subtype} {self.product} in {self.year} has no correction factor "
                f"{', '.join(unknown)} (declared: {', '.join(sorted(declared)) or 'none'})",
                reason="UNKNOWN_CORRECTION_FACTOR",
                field="factors",
            )
        by_input = {c.input: name for name, c in self.corrections.items()}
        unknown = sorted(set(inputs) - set(by_input))
        if unknown:
            raise InvalidCommand(
                f"{self.subtype} {self.product} in {self.year} has no correction reading "
                f"{', '.join(unknown)} (it reads: {', '.join(sorted(by_input)) or 'nothing'})",
                reason="UNKNOWN_CORRECTION_INPUT",
                field="inputs",
            )
        derived = {
            name: correction.value(inputs[correction.input])
            for name, correction in self.corrections.items()
            if correction.input in inputs and name not in given
        }
        resolved = {**self.factors, **derived, **given}
        missing = sorted(declared - set(resolved))
        if missing:
            needs = ", ".join(self.corrections[m].input for m in missing)
            raise InvalidCommand(
                f"{self.subtype} {self.product} in {self.year} needs {needs} "
                f"(no default for {', '.join(missing)})",
                reason="MISSING_CORRECTION_INPUT",
                field="inputs",
            )
        return MappingProxyType(resolved)

    def check_benchmark(self) -> None:
        """Refuse a benchmark computation for a year allocated at verified emissions."""
        if self.method is not Method.BENCHMARK:
            raise InvalidCommand(
                f"{self.sector} {self.year} is allocated at verified emissions "
                "(registry allocate verified-emissions), not by benchmark",
                reason="NOT_BENCHMARK_ALLOCATED",
                field="year",
            )


@dataclass(frozen=True)
class BenchmarkTable:
    """Benchmark rows keyed by (year, sector, subtype, product); ``digest`` is the
    source file's. One table may hold many years: each computation takes the rows of
    its compliance year."""

    rows: tuple[BenchmarkRow, ...]
    digest: str = ""
    _index: Mapping[tuple[int, Sector, Subtype, Product], BenchmarkRow] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[int, Sector, Subtype, Product], BenchmarkRow] = {}
        methods: dict[tuple[int, Sector], Method] = {}
        for row in self.rows:
            if row.key in index:
                raise InvalidCommand(
                    f"two benchmarks for {row.year} {row.subtype} {row.product}",
                    reason="DUPLICATE_ROW",
                )
            if methods.setdefault((row.year, row.sector), row.method) is not row.method:
                raise InvalidCommand(
                    f"{row.sector} {row.year} mixes BENCHMARK and VERIFIED_EMISSIONS rows",
                    reason="MIXED_METHODS",
                    field="method",
                )
            index[row.key] = row
        object.__setattr__(self, "_index", MappingProxyType(index))

    def row(
        self, year: int, sector: Sector, subtype: Subtype, product: Product | None = None
    ) -> BenchmarkRow:
        """The row of the compliance ``year``; ``product`` empty = the main product."""
        line = subtype.product(product)
        found = self._index.get((year, sector, subtype, line))
        if found is None:
            raise InvalidCommand(
                f"no benchmark for {year} {sector} {subtype} {line}",
                reason="NO_BENCHMARK",
                field="product" if line is not subtype.products[0] else "subtype",
            )
        return found

    def method(self, year: int, sector: Sector) -> Method | None:
        """How the table allocates ``sector`` in ``year`` (None: it has no row for it)."""
        return next((r.method for r in self.rows if r.year == year and r.sector is sector), None)

    def years(self) -> tuple[int, ...]:
        return tuple(sorted({r.year for r in self.rows}))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class OutputRow:
    """One product line of a generating unit (or plant) in one year: its output, the
    inputs its corrections read (cooling method, heat share, load rate) and any factor
    given outright."""

    account_id: str
    year: int
    subtype: Subtype
    output: Decimal
    factors: Factors = field(default_factory=lambda: NO_FACTORS, hash=False)
    unit_id: str = ""
    product: Product | None = None
    inputs: Inputs = field(default_factory=lambda: NO_INPUTS, hash=False)

    def __post_init__(self) -> None:
        check_account_id(self.account_id)
        check_year(self.year)
        object.__setattr__(self, "subtype", parse_subtype(self.subtype))
        object.__setattr__(self, "product", self.subtype.product(self.product))
        _output(self.output)
        if self.unit_id:
            check_client_id(self.unit_id, "unit id")
        object.__setattr__(self, "factors", check_factors(self.factors))
        object.__setattr__(self, "inputs", check_inputs(self.inputs))

    @property
    def sector(self) -> Sector:
        return self.subtype.sector

    def earns(self, table: BenchmarkTable, use: OutputUse) -> int:
        """What this line earns for ``use``: its benchmark row's formula, floored."""
        benchmark = self.benchmark_row(table, use)
        share = benchmark.pre_allocation_share if use is OutputUse.PRE_ALLOCATION else Decimal(1)
        return _allocate(benchmark, self.output, self.factors, share, self.inputs)

    def benchmark_row(self, table: BenchmarkTable, use: OutputUse) -> BenchmarkRow:
        """The benchmark row this line reads, checked to be a benchmark year whose
        factors the line's inputs and factors resolve (else a precise error)."""
        benchmark = table.row(
            use.benchmark_year(self.year), self.sector, self.subtype, self.product
        )
        benchmark.check_benchmark()
        benchmark.resolve_factors(self.factors, self.inputs)
        return benchmark


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
    row: BenchmarkRow,
    previous_output: Decimal | int,
    factors: Factors | None = None,
    inputs: Inputs | None = None,
) -> int:
    """Share (0.7) x benchmark x the previous year's output x factors, floored to tonnes."""
    return _allocate(row, previous_output, factors, row.pre_allocation_share, inputs)


def final_allocation(
    row: BenchmarkRow,
    actual_output: Decimal | int,
    factors: Factors | None = None,
    inputs: Inputs | None = None,
) -> int:
    """Benchmark x the year's verified output x factors, floored to tonnes."""
    return _allocate(row, actual_output, factors, Decimal(1), inputs)


def verified_emissions_allocation(
    table: BenchmarkTable, year: int, sector: Sector, verified_emissions: int
) -> int:
    """The allocation of a sector's year the table allocates at verified emissions:
    exactly those emissions (MEE Work Plan of 26 March 2025: 2024 for steel, cement and
    aluminium). Refused for a year the table allocates by benchmark, or not at all."""
    if type(verified_emissions) is not int or verified_emissions < 0:
        raise InvalidCommand(
            f"verified emissions must be whole tonnes >= 0, got {verified_emissions!r}",
            reason="INVALID_EMISSIONS",
        )
    method = table.method(year, sector)
    if method is not Method.VERIFIED_EMISSIONS:
        how = "has no row for it" if method is None else "allocates it by benchmark"
        raise InvalidCommand(
            f"{sector} {year} is not allocated at verified emissions (the table {how})",
            reason="NOT_VERIFIED_EMISSIONS_ALLOCATED",
            field="account_id",
        )
    return verified_emissions


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
    VERIFIED_EMISSIONS = "VERIFIED_EMISSIONS"
    """Verified emissions of year Y are year Y's allocation (no output, no benchmark)."""

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
        given more keeps it until the true-up); the true-up (and an allocation at
        verified emissions) settles the difference."""
        if self.use is OutputUse.PRE_ALLOCATION:
            return TrueUp(additional=max(self.target - self.allocated, 0))
        return true_up(self.target, self.allocated)


def account_targets(
    rows: Iterable[OutputRow], table: BenchmarkTable, use: OutputUse
) -> dict[str, tuple[Sector, int, int]]:
    """(sector, output rows, target tonnes) per account, rows in file order.

    Each row (one product line of one unit) is floored on its own (the rounding rule),
    then an account's rows are summed, so a CHP unit earns its electricity line plus its
    heat line, and splitting a plant into units never earns a tonne its rows did not.
    """
    targets: dict[str, tuple[Sector, int, int]] = {}
    for row in rows:
        earned = row.earns(table, use)
        sector, count, total = targets.get(row.account_id, (row.sector, 0, 0))
        targets[row.account_id] = (sector, count + 1, total + earned)
    return targets


# == validation ==================================================================


def _allocate(
    row: BenchmarkRow,
    output: Decimal | int,
    factors: Factors | None,
    share: Decimal,
    inputs: Inputs | None = None,
) -> int:
    row.check_benchmark()
    assert row.benchmark is not None  # a BENCHMARK row has one
    product = Fraction(share) * Fraction(row.benchmark) * Fraction(_output(output))
    for value in row.resolve_factors(factors, inputs).values():
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


def check_inputs(inputs: Inputs) -> Inputs:
    """Reported inputs: lower_snake names; a decimal, or a category like ``AIR``."""
    for name, value in inputs.items():
        if not FACTOR_NAME.match(name):
            raise InvalidCommand(
                f"input name {name!r} is not lower_snake",
                reason="INVALID_CORRECTION_INPUT",
                field="inputs",
            )
        if isinstance(value, bool) or not isinstance(value, (Decimal, str)):
            raise TypeError(f"input {name} must be a Decimal or a category, got {value!r}")
        if isinstance(value, str) and not CATEGORY.match(value):
            raise InvalidCommand(
                f"input {name}={value!r} is neither a decimal nor a category like AIR",
                reason="INVALID_CORRECTION_INPUT",
                field="inputs",
            )
        if isinstance(value, Decimal) and not value.is_finite():
            raise InvalidCommand(
                f"input {name}={value} is not a finite decimal",
                reason="INVALID_CORRECTION_INPUT",
                field="inputs",
            )
    return MappingProxyType(dict(inputs))


def parse_product(text: str) -> Product:
    if text not in Product.__members__:
        raise InvalidCommand(
            f"product {text!r} must be one of {', '.join(Product)}",
            reason="INVALID_PRODUCT",
            field="product",
        )
    return Product(text)


def parse_method(text: str) -> Method:
    if text not in Method.__members__:
        raise InvalidCommand(
            f"method {text!r} must be one of {', '.join(Method)}",
            reason="INVALID_METHOD",
            field="method",
        )
    return Method(text)


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

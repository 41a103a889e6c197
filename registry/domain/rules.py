"""Compliance rules as versioned data, per compliance year and sector.

The rules of the national scheme change from cycle to cycle and differ by sector: the
offset (CCER) cap, which allowance vintages a year accepts, whether next year's
allowances may be used in advance, the surrender deadline, and caps on the obligation
itself (the power sector's first cycles capped it at allocation + 20 % of verified
emissions; gas units at their allocation). They are data a regulator sets, not code:
each change is an event on the year's ``ComplianceYear`` aggregate saying who, when
and why, and once the year is closed nothing about it changes.

Shares are integer basis points (1 % = 100 bps), so no tonne is ever rounded through a
float; a share of emissions is rounded down to whole tonnes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import ComplianceYearClosed, InvalidCommand, RowsInvalid, Violation
from registry.domain.ids import NAMESPACE

BPS = 10_000
RULE_INVALID = "INVALID_RULE"
DEFAULT_SECTOR = "*"
"""The key of a year's rules for every sector that has none of its own."""
RULE_KEYS = ("*", "POWER", "STEEL", "CEMENT", "ALUMINIUM")


UNIT_CATEGORIES = (
    "COAL_CONVENTIONAL_300MW_PLUS",
    "COAL_CONVENTIONAL_BELOW_300MW",
    "COAL_UNCONVENTIONAL",
    "GAS",
)
"""The power sector's unit categories, spelled as ``registry.domain.allocation.Subtype``
spells them (that module depends on this one, so the names are repeated here; a unit
test keeps the two equal)."""
ALL_CATEGORIES = "*"
"""The key of ``unit_obligation_cap_bps`` for every category without its own."""
MAX_UNIT_LINES = 200
"""Unit lines one emissions row may carry (the largest power companies run dozens)."""


def share(tonnes: int, bps: int) -> int:
    """``bps`` basis points of ``tonnes``, rounded down to whole tonnes."""
    return tonnes * bps // BPS


class CcerCapBase(StrEnum):
    """What the CCER cap is a share of."""

    OBLIGATION = "OBLIGATION"
    """The allowances due for surrender (MEE Measures 2020, Art. 29): the shipped rule."""
    VERIFIED_EMISSIONS = "VERIFIED_EMISSIONS"
    """Verified emissions: what rules written before rule vocabulary v2 meant."""


class AdvanceUseBase(StrEnum):
    """What the advance-use (borrowing) limit is a share of."""

    GAP = "GAP"
    """The gap: obligation minus the year's free allocation (2021-2022 power plan)."""
    VERIFIED_EMISSIONS = "VERIFIED_EMISSIONS"
    """Verified emissions: what rules written before rule vocabulary v2 meant."""


class CarryOver(StrEnum):
    """How many allowances of older vintages (banked ones) a company may surrender."""

    UNLIMITED = "UNLIMITED"
    """Any vintage from ``cea_min_vintage`` on, without a quantity limit."""
    NONE = "NONE"
    """No allowance of a carried vintage counts."""
    NET_SALES = "NET_SALES"
    """Per company: a x its net sales of allowances over a period + b tonnes
    (2023-2024 power plan)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _date_or_none(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class UnitLine:
    """One generating unit's (or one unit category's) part of a company's verified
    emissions, with the free allocation approved for it: the power plans relieve per
    unit (a gas unit owes at most its allocation), so the obligation is summed over
    these lines before the company's own cap."""

    category: str = ""
    """A ``UNIT_CATEGORIES`` name; "" for a line that is not broken down (a figure
    recorded without lines, or before lines existed)."""
    unit_id: str = ""
    """The generating unit, where a company gives one line per unit ("" if by category)."""
    verified_emissions: int = 0
    allocated: int | None = None
    """Tonnes allocated for this unit or category; None: the company's allocation (the
    line that is the whole company)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitLine:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def whole(cls, verified: int) -> UnitLine:
        """The one line of a figure given without a breakdown."""
        return cls(verified_emissions=verified)


def unit_line_violations(
    verified: int, lines: Sequence[UnitLine], name: str = "unit_lines"
) -> list[Violation]:
    """Every problem of a row's unit lines, each named by its field: a known category,
    whole tonnes, no (category, unit) twice, and lines that add up to the row's figure."""
    found: list[Violation] = []

    def bad(field_name: str, reason: str, message: str) -> None:
        found.append(Violation(field_name, reason, message))

    if len(lines) > MAX_UNIT_LINES:
        bad(name, "TOO_MANY_UNIT_LINES", f"at most {MAX_UNIT_LINES} unit lines, got {len(lines)}")
        return found
    seen: dict[tuple[str, str], int] = {}
    for index, line in enumerate(lines):
        at = f"{name}[{index}]"
        if line.category not in UNIT_CATEGORIES:
            bad(
                f"{at}.unit_category",
                "INVALID_UNIT_CATEGORY",
                f"unit category {line.category!r} must be one of {', '.join(UNIT_CATEGORIES)}",
            )
        if line.unit_id and (
            not isinstance(line.unit_id, str)
            or len(line.unit_id) > 64
            or not line.unit_id.isprintable()
            or line.unit_id != line.unit_id.strip()
        ):
            bad(f"{at}.unit_id", "INVALID_UNIT_ID", "unit id: at most 64 printable characters")
        for column, value, reason in (
            ("verified_emissions", line.verified_emissions, "INVALID_EMISSIONS"),
            ("allocated", line.allocated, "INVALID_ALLOCATION"),
        ):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                bad(f"{at}.{column}", reason, f"{column} must be whole tonnes >= 0, got {value!r}")
        first = seen.setdefault((line.category, line.unit_id), index)
        if first != index:
            bad(
                f"{at}.unit_id",
                "DUPLICATE_UNIT_LINE",
                f"{name}[{first}] already gives {line.category} unit {line.unit_id or '(none)'}",
            )
    if not found and lines:
        total = sum(line.verified_emissions for line in lines)
        if total != verified:
            bad(
                name,
                "UNIT_LINES_MISMATCH",
                f"the unit lines add up to {total} t, the row's verified emissions are "
                f"{verified} t",
            )
    return found


@dataclass(frozen=True)
class UnitDue:
    """What one unit line owes, as the rules judge it."""

    line: UnitLine
    allocated: int
    """The allocation the line is judged against (its own, or the company's)."""
    due: int


@dataclass(frozen=True)
class ComplianceRules:
    """The rules one sector surrenders under for one compliance year."""

    ccer_cap_bps: int = 500
    """CCER may cover at most this share of ``ccer_cap_base`` (5 %)."""
    cea_min_vintage: int | None = None
    """The oldest allowance vintage accepted; None: any vintage up to the year."""
    advance_use_bps: int = 0
    """Allowances of the next year's vintage may cover this share of
    ``advance_use_base`` ("borrowing"); 0: not allowed."""
    surrender_deadline: str = ""
    """ISO date by which units must be surrendered; empty: 31 December of the next year."""
    obligation_cap_bps: int | None = None
    """The obligation is capped at the year's free allocation plus this share of
    verified emissions; None: no cap (the obligation is the verified emissions)."""
    ccer_cap_base: str = CcerCapBase.OBLIGATION.value
    """What ``ccer_cap_bps`` is a share of (``CcerCapBase``)."""
    advance_use_base: str = AdvanceUseBase.GAP.value
    """What ``advance_use_bps`` is a share of (``AdvanceUseBase``)."""
    advance_use_min_gap_bps: int = 0
    """Who may borrow: only a company whose gap rate (gap / verified emissions) is at
    least this; 0: any company."""
    carry_over: str = CarryOver.UNLIMITED.value
    """How many allowances of carried vintages count (``CarryOver``)."""
    carry_over_max_vintage: int | None = None
    """The newest carried vintage; None: every vintage before the year."""
    carry_over_net_sales_bps: int = 0
    """NET_SALES: a, in basis points of the net sales (1.5 x = 15,000)."""
    carry_over_base_tonnes: int = 0
    """NET_SALES: b, tonnes every company may carry over."""
    carry_over_sales_from: str = ""
    """NET_SALES: first day (ISO date) of the period whose net sales count."""
    carry_over_sales_to: str = ""
    """NET_SALES: last day (ISO date, inclusive) of that period."""
    unit_obligation_cap_bps: dict[str, int] = field(default_factory=dict)
    """Per unit category (``UNIT_CATEGORIES``, or ``*`` for every category without its
    own): a unit line of it owes at most its own allocation plus this share of its own
    verified emissions. GAS 0: a gas unit owes at most its allocation (power plans
    2019-2020 and 2021-2022). Empty: every line owes its verified emissions. The
    company-level cap (``obligation_cap_bps``) applies to the sum afterwards."""

    def violations(self, year: int) -> list[Violation]:
        """Every inconsistent field, named, for a precise error."""
        found: list[Violation] = []

        def bad(name: str, message: str) -> None:
            found.append(Violation(f"rules.{name}", RULE_INVALID, message))

        for name in ("ccer_cap_bps", "advance_use_bps", "advance_use_min_gap_bps"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value <= BPS:
                bad(name, f"{name} must be 0..{BPS} bps")
        cap = self.obligation_cap_bps
        if cap is not None and (not _is_int(cap) or not 0 <= cap <= BPS):
            bad("obligation_cap_bps", f"obligation_cap_bps must be 0..{BPS} bps or unset")
        oldest = self.cea_min_vintage
        if oldest is not None and (not _is_int(oldest) or not 2005 <= oldest <= year):
            bad("cea_min_vintage", f"cea_min_vintage must be 2005..{year} or unset")
        for name, kind in (
            ("ccer_cap_base", CcerCapBase),
            ("advance_use_base", AdvanceUseBase),
            ("carry_over", CarryOver),
        ):
            if getattr(self, name) not in {m.value for m in kind}:
                bad(name, f"{name} must be one of {', '.join(m.value for m in kind)}")
        newest = self.carry_over_max_vintage
        if newest is not None and (not _is_int(newest) or not 2005 <= newest < year):
            bad("carry_over_max_vintage", f"carry_over_max_vintage must be 2005..{year - 1}")
        if not _is_int(self.carry_over_net_sales_bps) or not 0 <= self.carry_over_net_sales_bps <= (
            100 * BPS
        ):
            bad("carry_over_net_sales_bps", f"carry_over_net_sales_bps must be 0..{100 * BPS}")
        if not _is_int(self.carry_over_base_tonnes) or self.carry_over_base_tonnes < 0:
            bad("carry_over_base_tonnes", "carry_over_base_tonnes must be a whole number >= 0")
        first = _date_or_none(self.carry_over_sales_from)
        last = _date_or_none(self.carry_over_sales_to)
        net_sales = self.carry_over == CarryOver.NET_SALES.value
        for name, day in (("carry_over_sales_from", first), ("carry_over_sales_to", last)):
            if day is None and (net_sales or getattr(self, name)):
                bad(name, f"{name} must be an ISO date (YYYY-MM-DD); NET_SALES needs it")
        if first is not None and last is not None and last < first:
            bad("carry_over_sales_to", "the net-sales period ends before it starts")
        caps = self.unit_obligation_cap_bps
        if not isinstance(caps, dict):
            bad("unit_obligation_cap_bps", "unit_obligation_cap_bps must map categories to bps")
        else:
            for category, bps in caps.items():
                if category not in (ALL_CATEGORIES, *UNIT_CATEGORIES):
                    bad(
                        "unit_obligation_cap_bps",
                        f"unit category {category!r} must be '*' or one of "
                        f"{', '.join(UNIT_CATEGORIES)}",
                    )
                elif not _is_int(bps) or not 0 <= bps <= BPS:
                    bad(
                        "unit_obligation_cap_bps",
                        f"the cap of {category} must be 0..{BPS} bps",
                    )
        if self.surrender_deadline:
            deadline = _date_or_none(self.surrender_deadline)
            if deadline is None:
                bad("surrender_deadline", "surrender_deadline must be an ISO date (YYYY-MM-DD)")
            elif deadline.year <= year:
                bad(
                    "surrender_deadline",
                    f"the surrender deadline for {year} must fall after {year}",
                )
        return found

    def check(self, year: int) -> ComplianceRules:
        found = self.violations(year)
        if found:
            raise RowsInvalid(
                f"{len(found)} invalid compliance rule(s) for {year}",
                violations=found,
                reason="INVALID_RULE",
            )
        return self

    def deadline(self, year: int) -> date:
        return (
            date.fromisoformat(self.surrender_deadline)
            if self.surrender_deadline
            else date(year + 1, 12, 31)
        )

    def unit_dues(self, lines: Sequence[UnitLine], allocated: int) -> tuple[UnitDue, ...]:
        """What each unit line owes: its verified emissions, capped at its allocation
        plus its category's share where ``unit_obligation_cap_bps`` caps the category.
        A line without an allocation of its own (the whole company) is judged against
        the company's ``allocated``."""
        caps = self.unit_obligation_cap_bps
        dues = []
        for line in lines:
            own = max(0, allocated if line.allocated is None else line.allocated)
            bps = caps.get(line.category, caps.get(ALL_CATEGORIES))
            verified = line.verified_emissions
            due = verified if bps is None else min(verified, own + share(verified, bps))
            dues.append(UnitDue(line, own, due))
        return tuple(dues)

    def obligation(self, verified: int, allocated: int, lines: Sequence[UnitLine] = ()) -> int:
        """What must be surrendered for ``verified`` tonnes, given the year's allocation:
        the sum of the unit lines' dues (without lines: the verified emissions), then
        the company's cap, its allocation plus a share of all its verified emissions."""
        due = sum(d.due for d in self.unit_dues(lines, allocated)) if lines else verified
        if self.obligation_cap_bps is None:
            return due
        return min(due, max(0, allocated) + share(verified, self.obligation_cap_bps))

    def ccer_cap(self, verified: int, allocated: int, lines: Sequence[UnitLine] = ()) -> int:
        """The most CCER tonnes the year accepts, of the obligation (Art. 29) or, for
        rules written before the base was explicit, of verified emissions."""
        base = (
            verified
            if self.ccer_cap_base == CcerCapBase.VERIFIED_EMISSIONS.value
            else self.obligation(verified, allocated, lines)
        )
        return share(base, self.ccer_cap_bps)

    def gap(self, verified: int, allocated: int, lines: Sequence[UnitLine] = ()) -> int:
        """The obligation not covered by the year's free allocation (0 if none)."""
        return max(0, self.obligation(verified, allocated, lines) - max(0, allocated))

    def may_borrow(self, verified: int, allocated: int, lines: Sequence[UnitLine] = ()) -> bool:
        """Whether the company is among those who may use next year's allowances: the
        year allows advance use and its gap rate reaches the threshold."""
        if not self.advance_use_bps:
            return False
        threshold = self.advance_use_min_gap_bps
        return threshold == 0 or self.gap(verified, allocated, lines) * BPS >= threshold * verified

    def advance_use_limit(
        self, verified: int, allocated: int, lines: Sequence[UnitLine] = ()
    ) -> int:
        """How many of next year's allowances the company may surrender for the year."""
        if not self.may_borrow(verified, allocated, lines):
            return 0
        base = (
            verified
            if self.advance_use_base == AdvanceUseBase.VERIFIED_EMISSIONS.value
            else self.gap(verified, allocated, lines)
        )
        return share(base, self.advance_use_bps)

    def carried_vintage(self, vintage: int, year: int) -> bool:
        """Whether an allowance of ``vintage`` surrendered for ``year`` is a carried
        (banked) one the carry-over rule limits."""
        newest = year - 1 if self.carry_over_max_vintage is None else self.carry_over_max_vintage
        return vintage <= newest

    def carry_over_limit(self, net_sales: int | None) -> int | None:
        """Tonnes of carried vintages a company may surrender: None for no limit; for
        NET_SALES, a x net sales (negative: net purchases, counted as 0) + b, rounded
        down. ``net_sales`` None (not known) counts as 0 (b only)."""
        if self.carry_over == CarryOver.UNLIMITED.value:
            return None
        if self.carry_over == CarryOver.NONE.value:
            return 0
        return share(max(0, net_sales or 0), self.carry_over_net_sales_bps) + (
            self.carry_over_base_tonnes
        )

    def net_sales_window(self) -> tuple[datetime, datetime] | None:
        """NET_SALES: the period whose net sales count, as recording times [start, end)
        in UTC (``carry_over_sales_to`` is a whole day, inclusive); None for the other
        forms. The status's figure (the read model) and the surrender's (the event
        store) both use it, so they count the same settlements."""
        if self.carry_over != CarryOver.NET_SALES.value:
            return None
        first = date.fromisoformat(self.carry_over_sales_from)
        last = date.fromisoformat(self.carry_over_sales_to)
        return (
            datetime.combine(first, time(), UTC),
            datetime.combine(last + timedelta(days=1), time(), UTC),
        )

    @property
    def carry_over_scope(self) -> str | None:
        """Which carry-over pool a NET_SALES limit draws on: its net-sales period and
        carried vintages. Years whose rules name the same pool share one limit, so the
        carried tonnes surrendered for one of them are no longer there for another (the
        2023-2024 plan's limit is per company over every later year, not per year).
        The multiplier and base tonnes are not part of it: changing them changes the
        size of the pool, not which pool. None: no pool (UNLIMITED, or NONE, which
        accepts no carried tonne at all)."""
        if self.carry_over != CarryOver.NET_SALES.value:
            return None
        newest = "year-1" if self.carry_over_max_vintage is None else self.carry_over_max_vintage
        return (
            f"NET_SALES:{self.carry_over_sales_from}..{self.carry_over_sales_to}:vintages..{newest}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplianceRules:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


DEFAULT_RULES = ComplianceRules()

LEGACY_BASES: dict[str, Any] = {
    "ccer_cap_base": CcerCapBase.VERIFIED_EMISSIONS.value,
    "advance_use_base": AdvanceUseBase.VERIFIED_EMISSIONS.value,
    "advance_use_min_gap_bps": 0,
    "carry_over": CarryOver.UNLIMITED.value,
}
"""What a ``RulesChanged`` of class version 1 meant by the fields it did not have."""
NO_UNIT_RELIEF: dict[str, Any] = {"unit_obligation_cap_bps": {}}
"""What a ``RulesChanged`` before class version 3 meant: no relief per unit category."""


def check_rule_key(sector: str) -> str:
    if sector not in RULE_KEYS:
        raise InvalidCommand(
            f"rules are set per sector ({', '.join(RULE_KEYS[1:])}) or "
            f"for all ({DEFAULT_SECTOR!r}); got {sector!r}",
            reason="INVALID_SECTOR",
            field="sector",
        )
    return sector


class ComplianceYear(Aggregate):
    """One compliance year: its rules by sector (each change recorded), and whether it
    is closed (after the deadline: shortfalls fixed, rules frozen)."""

    TOPIC = "registry.ComplianceYear"

    def __init__(self) -> None:
        self.year = 0
        self.rules: dict[str, dict[str, Any]] = {}
        self.closed = False
        self.closed_by = ""
        self.close_reason = ""

    @staticmethod
    def id_for(year: int) -> UUID:
        return uuid5(NAMESPACE, f"compliance-year:{year}")

    class Created(Aggregate.Created):
        TOPIC = "registry.ComplianceYear.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.ComplianceYear.Started"
        year: int

        def apply(self, aggregate: ComplianceYear) -> None:
            aggregate.year = self.year

    class RulesChanged(Aggregate.Event):
        """The rules of one sector (or of all, ``*``) from now on, and why."""

        TOPIC = "registry.ComplianceYear.RulesChanged"
        class_version = 3
        sector: str
        rules: dict[str, Any]
        principal: str
        reason: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Rules written before the bases were explicit meant shares of verified
            emissions, open to every company: say so, so they judge as they did."""
            state["rules"] = {**LEGACY_BASES, **state["rules"]}

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """Rules written before unit categories had no relief per category: say so,
            so the same rules set again are recognised as unchanged."""
            state["rules"] = {**NO_UNIT_RELIEF, **state["rules"]}

        def apply(self, aggregate: ComplianceYear) -> None:
            aggregate.rules = {**aggregate.rules, self.sector: dict(self.rules)}

    class Closed(Aggregate.Event):
        TOPIC = "registry.ComplianceYear.Closed"
        principal: str
        reason: str

        def apply(self, aggregate: ComplianceYear) -> None:
            aggregate.closed = True
            aggregate.closed_by = self.principal
            aggregate.close_reason = self.reason

    @classmethod
    def start(cls, year: int) -> ComplianceYear:
        return cls._create(cls.Started, id=cls.id_for(year), year=year)

    def rules_for(self, sector: str) -> ComplianceRules:
        """The sector's own rules, else the year's rules for all sectors, else the
        scheme's defaults."""
        data = self.rules.get(sector) or self.rules.get(DEFAULT_SECTOR)
        return DEFAULT_RULES if data is None else ComplianceRules.from_dict(data)

    def ensure_open(self) -> None:
        if self.closed:
            raise ComplianceYearClosed(f"compliance year {self.year} is closed", year=self.year)

    def change_rules(
        self, sector: str, rules: ComplianceRules, principal: str, reason: str
    ) -> bool:
        """Set a sector's rules; False (no event) when they are already the rules."""
        check_rule_key(sector)
        self.ensure_open()
        if self.rules.get(sector) == rules.as_dict():
            return False
        self.trigger_event(
            self.RulesChanged,
            sector=sector,
            rules=rules.as_dict(),
            principal=principal,
            reason=reason,
        )
        return True

    def close(self, principal: str, reason: str) -> None:
        self.ensure_open()
        self.trigger_event(self.Closed, principal=principal, reason=reason)

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

from dataclasses import asdict, dataclass, fields
from datetime import date
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


def share(tonnes: int, bps: int) -> int:
    """``bps`` basis points of ``tonnes``, rounded down to whole tonnes."""
    return tonnes * bps // BPS


@dataclass(frozen=True)
class ComplianceRules:
    """The rules one sector surrenders under for one compliance year."""

    ccer_cap_bps: int = 500
    """CCER may cover at most this share of verified emissions (5 %)."""
    cea_min_vintage: int | None = None
    """The oldest allowance vintage accepted; None: any vintage up to the year."""
    advance_use_bps: int = 0
    """Allowances of the next year's vintage may cover this share of verified emissions
    ("borrowing"); 0: not allowed."""
    surrender_deadline: str = ""
    """ISO date by which units must be surrendered; empty: 31 December of the next year."""
    obligation_cap_bps: int | None = None
    """The obligation is capped at the year's free allocation plus this share of
    verified emissions; None: no cap (the obligation is the verified emissions)."""

    def violations(self, year: int) -> list[Violation]:
        """Every inconsistent field, named, for a precise error."""
        found: list[Violation] = []
        for name in ("ccer_cap_bps", "advance_use_bps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= BPS:
                found.append(
                    Violation(f"rules.{name}", RULE_INVALID, f"{name} must be 0..{BPS} bps")
                )
        cap = self.obligation_cap_bps
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= BPS
        ):
            found.append(
                Violation(
                    "rules.obligation_cap_bps",
                    RULE_INVALID,
                    f"obligation_cap_bps must be 0..{BPS} bps or unset",
                )
            )
        oldest = self.cea_min_vintage
        if oldest is not None and (
            isinstance(oldest, bool) or not isinstance(oldest, int) or not 2005 <= oldest <= year
        ):
            found.append(
                Violation(
                    "rules.cea_min_vintage",
                    RULE_INVALID,
                    f"cea_min_vintage must be 2005..{year} or unset",
                )
            )
        if self.surrender_deadline:
            try:
                deadline = date.fromisoformat(self.surrender_deadline)
            except (TypeError, ValueError):
                found.append(
                    Violation(
                        "rules.surrender_deadline",
                        RULE_INVALID,
                        "surrender_deadline must be an ISO date (YYYY-MM-DD)",
                    )
                )
            else:
                if deadline.year <= year:
                    found.append(
                        Violation(
                            "rules.surrender_deadline",
                            RULE_INVALID,
                            f"the surrender deadline for {year} must fall after {year}",
                        )
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

    def obligation(self, verified: int, allocated: int) -> int:
        """What must be surrendered for ``verified`` tonnes, given the year's allocation."""
        if self.obligation_cap_bps is None:
            return verified
        return min(verified, max(0, allocated) + share(verified, self.obligation_cap_bps))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplianceRules:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


DEFAULT_RULES = ComplianceRules()


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
        sector: str
        rules: dict[str, Any]
        principal: str
        reason: str

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

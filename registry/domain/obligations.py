"""Compliance obligations, one per (compliance account, compliance year).

This holds the verified emissions of the year, the free allocation given for it, what
was surrendered against it, and, once the year is closed, the shortfall fixed then.
The rules it is judged by (``registry.domain.rules``) are passed in: they belong to
the year and the sector, not to one account.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import (
    AdvanceUseLimitExceeded,
    AdvanceUseNotAllowed,
    AdvanceUseNotEligible,
    CarryOverLimitExceeded,
    CcerCapExceeded,
    ComplianceYearClosed,
    EmissionsNotVerified,
    IneligibleVintage,
    InvalidCommand,
    NotReversible,
)
from registry.domain.ids import NAMESPACE
from registry.domain.rules import (
    AdvanceUseBase,
    CarryOver,
    CcerCapBase,
    ComplianceRules,
)
from registry.domain.units import SerialBlock, UnitType

MIN_YEAR = 2019
MAX_YEAR = 2100


def check_year(year: int) -> int:
    if not isinstance(year, int) or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidCommand(
            f"compliance year must be {MIN_YEAR}..{MAX_YEAR}, got {year!r}",
            reason="INVALID_COMPLIANCE_YEAR",
        )
    return year


class ComplianceStatus(StrEnum):
    NOT_VERIFIED = "NOT_VERIFIED"
    """No verified emissions recorded for the year."""
    OPEN = "OPEN"
    """Verified, the year not closed, less surrendered than the obligation so far."""
    COMPLIANT = "COMPLIANT"
    """Surrendered at least the obligation."""
    SHORTFALL = "SHORTFALL"
    """The year closed with less surrendered than the obligation: the shortfall is
    fixed and deducted from the next year's allocation."""


class ComplianceObligation(Aggregate):
    TOPIC = "registry.ComplianceObligation"

    # Class defaults as well as state, so snapshots taken before a field existed (or
    # before its first event) still restore.
    verified_emissions: int | None = None
    """Tonnes CO2e as verified, None until a verifier's figure is recorded."""
    allocated: int = 0
    """Free allocation of the year's vintage given to the account, net of returns."""
    advance_used: int = 0
    """Next year's allowances surrendered for this year (advance use)."""
    closed: bool = False
    shortfall: int = 0
    """Fixed when the year closed: obligation minus surrendered, if positive."""
    debt: int = 0
    """Shortfall of the previous year, deducted from this year's allocation."""
    debt_deducted: int = 0

    def __init__(self) -> None:
        self.account_id = ""
        self.year = 0
        self.surrendered: dict[str, int] = {}
        self.verified_emissions = None

    @staticmethod
    def id_for(account_id: str, year: int) -> UUID:
        return uuid5(NAMESPACE, f"obligation:{account_id}:{year}")

    @property
    def total_surrendered(self) -> int:
        return sum(self.surrendered.values())

    @property
    def debt_outstanding(self) -> int:
        return self.debt - self.debt_deducted

    def obligation(self, rules: ComplianceRules) -> int:
        """What must be surrendered (0 until emissions are verified)."""
        if self.verified_emissions is None:
            return 0
        return rules.obligation(self.verified_emissions, self.allocated)

    def status(self, rules: ComplianceRules, year_closed: bool = False) -> ComplianceStatus:
        if self.verified_emissions is None:
            return ComplianceStatus.NOT_VERIFIED
        if self.total_surrendered >= self.obligation(rules):
            return ComplianceStatus.COMPLIANT
        if self.closed or year_closed:
            return ComplianceStatus.SHORTFALL
        return ComplianceStatus.OPEN

    class Created(Aggregate.Created):
        TOPIC = "registry.ComplianceObligation.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.ComplianceObligation.Started"
        account_id: str
        year: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.account_id = self.account_id
            obligation.year = self.year

    class UnitsSurrendered(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.UnitsSurrendered"
        transaction_id: UUID
        unit_type: str
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation._add(self.unit_type, self.quantity)

    class SurrenderReversed(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.SurrenderReversed"
        transaction_id: UUID
        unit_type: str
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation._add(self.unit_type, -self.quantity)

    class EmissionsVerified(Aggregate.Event):
        """The verified figure for the year: the first one, or a correction of it."""

        TOPIC = "registry.ComplianceObligation.EmissionsVerified"
        emissions: int
        reason: str
        principal: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.verified_emissions = self.emissions

    class AllocationRecorded(Aggregate.Event):
        """Units of the year's vintage allocated to (or, negative, returned by) the
        account: the obligation cap of some sectors depends on it."""

        TOPIC = "registry.ComplianceObligation.AllocationRecorded"
        transaction_id: UUID
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.allocated += self.quantity

    class AdvanceUseRecorded(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.AdvanceUseRecorded"
        transaction_id: UUID
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.advance_used += self.quantity

    class Closed(Aggregate.Event):
        """Deadline processing: the obligation and the shortfall, fixed."""

        TOPIC = "registry.ComplianceObligation.Closed"
        obligation: int
        surrendered: int
        shortfall: int
        principal: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.closed = True
            obligation.shortfall = self.shortfall

    class DebtCarried(Aggregate.Event):
        """The previous year's shortfall, to be deducted from this year's allocation."""

        TOPIC = "registry.ComplianceObligation.DebtCarried"
        from_year: int
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.debt += self.quantity

    class DebtDeducted(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.DebtDeducted"
        transaction_id: UUID
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.debt_deducted += self.quantity

    def _add(self, unit_type: str, quantity: int) -> None:
        self.surrendered = {
            **self.surrendered,
            unit_type: self.surrendered.get(unit_type, 0) + quantity,
        }

    @classmethod
    def start(cls, account_id: str, year: int) -> ComplianceObligation:
        return cls._create(
            cls.Started, id=cls.id_for(account_id, year), account_id=account_id, year=year
        )

    def ensure_open(self) -> None:
        if self.closed:
            raise ComplianceYearClosed(
                f"compliance year {self.year} is closed", year=self.year, account=self.account_id
            )

    def check_surrender(
        self,
        rules: ComplianceRules,
        blocks: Iterable[SerialBlock],
        net_sales: int | None = None,
        carried_before: int = 0,
    ) -> int:
        """Refuse a surrender of these blocks the year's rules do not accept; returns
        how many of them are next year's allowances (advance use).

        ``net_sales`` (the company's net sales of allowances over the carry-over
        rule's period) and ``carried_before`` (carried vintages it already surrendered
        under that limit) let a NET_SALES carry-over limit be judged; without
        ``net_sales`` that limit is not judged here (NONE always is)."""
        self.ensure_open()
        advance = ccer = carried = 0
        for block in blocks:
            unit_class = block.unit_class
            if unit_class.unit_type is UnitType.CCER:
                ccer += block.quantity
                continue
            vintage = unit_class.vintage
            oldest = rules.cea_min_vintage
            if vintage > self.year + 1 or (oldest is not None and vintage < oldest):
                advance_note = f", {self.year + 1} in advance" if rules.advance_use_bps else ""
                raise IneligibleVintage(
                    f"CEA of vintage {vintage} cannot be surrendered for {self.year} "
                    f"(accepted: {oldest or 'any'}..{self.year}{advance_note})",
                    vintage=vintage,
                    year=self.year,
                )
            if vintage == self.year + 1:
                advance += block.quantity
            elif rules.carried_vintage(vintage, self.year):
                carried += block.quantity
        if carried:
            self._check_carry_over(rules, carried, net_sales, carried_before)
        if advance:
            self._check_advance(rules, advance)
        if ccer:
            cap = self.ccer_cap(rules)
            already = self.surrendered.get(UnitType.CCER.value, 0)
            if already + ccer > cap:
                raise CcerCapExceeded(
                    f"{already + ccer} CCER would exceed the cap of {cap} "
                    f"({rules.ccer_cap_bps} bps of {_base_name(rules.ccer_cap_base)})",
                    limit=cap,
                    surrendered=already,
                    requested=ccer,
                )
        return advance

    def ccer_cap(self, rules: ComplianceRules) -> int:
        """The most CCER tonnes the year accepts from this company (refused before
        verified emissions are recorded)."""
        return rules.ccer_cap(self._verified("CCER"), self.allocated)

    def ccer_remaining(self, rules: ComplianceRules) -> int:
        """CCER tonnes that may still be surrendered (0 before verification)."""
        if self.verified_emissions is None:
            return 0
        return max(
            0,
            rules.ccer_cap(self.verified_emissions, self.allocated)
            - self.surrendered.get(UnitType.CCER.value, 0),
        )

    def advance_use_limit(self, rules: ComplianceRules) -> int:
        """Next year's allowances this company may surrender for the year in all (0
        before verification, or when it may not borrow)."""
        if self.verified_emissions is None:
            return 0
        return rules.advance_use_limit(self.verified_emissions, self.allocated)

    def _check_advance(self, rules: ComplianceRules, advance: int) -> None:
        if not rules.advance_use_bps:
            raise AdvanceUseNotAllowed(
                f"{self.year} allows no advance use of {self.year + 1} allowances",
                year=self.year,
                vintage=self.year + 1,
            )
        verified = self._verified("advance use")
        if not rules.may_borrow(verified, self.allocated):
            gap = rules.gap(verified, self.allocated)
            raise AdvanceUseNotEligible(
                f"advance use for {self.year} is open only to a gap rate of at least "
                f"{rules.advance_use_min_gap_bps} bps; {self.account_id}'s gap is {gap} t "
                f"of {verified} t verified",
                gap=gap,
                verified=verified,
                threshold_bps=rules.advance_use_min_gap_bps,
            )
        limit = rules.advance_use_limit(verified, self.allocated)
        if self.advance_used + advance > limit:
            raise AdvanceUseLimitExceeded(
                f"advance use of {self.advance_used + advance} exceeds the limit of "
                f"{limit} ({rules.advance_use_bps} bps of {_base_name(rules.advance_use_base)})",
                limit=limit,
                used=self.advance_used,
                requested=advance,
            )

    def _check_carry_over(
        self, rules: ComplianceRules, carried: int, net_sales: int | None, before: int
    ) -> None:
        if rules.carry_over == CarryOver.NET_SALES.value and net_sales is None:
            return  # the net sales are not known here: judged where they are
        limit = rules.carry_over_limit(net_sales)
        if limit is not None and before + carried > limit:
            raise CarryOverLimitExceeded(
                f"{before + carried} t of carried vintages would exceed {self.account_id}'s "
                f"carry-over limit of {limit} t for {self.year} ({rules.carry_over})",
                limit=limit,
                used=before,
                requested=carried,
            )

    def _verified(self, what: str) -> int:
        if self.verified_emissions is None:
            raise EmissionsNotVerified(
                f"{what} for {self.year} is capped by verified emissions; none recorded "
                f"for {self.account_id}",
                account=self.account_id,
                year=self.year,
            )
        return self.verified_emissions

    def record_surrender(
        self, transaction_id: UUID, unit_type: str, quantity: int, advance: int = 0
    ) -> None:
        self.trigger_event(
            self.UnitsSurrendered,
            transaction_id=transaction_id,
            unit_type=unit_type,
            quantity=quantity,
        )
        if advance:
            self.trigger_event(
                self.AdvanceUseRecorded, transaction_id=transaction_id, quantity=advance
            )

    def record_allocation(self, transaction_id: UUID, quantity: int) -> None:
        self.trigger_event(
            self.AllocationRecorded, transaction_id=transaction_id, quantity=quantity
        )

    def close(self, rules: ComplianceRules, principal: str) -> int:
        """Fix the shortfall at the deadline; returns it (0 when compliant or never
        verified: an unverified year is reported as such, not as a shortfall)."""
        self.ensure_open()
        owed = self.obligation(rules)
        shortfall = max(0, owed - self.total_surrendered)
        self.trigger_event(
            self.Closed,
            obligation=owed,
            surrendered=self.total_surrendered,
            shortfall=shortfall,
            principal=principal,
        )
        return shortfall

    def carry_debt(self, from_year: int, quantity: int) -> None:
        self.trigger_event(self.DebtCarried, from_year=from_year, quantity=quantity)

    def deduct_debt(self, transaction_id: UUID, quantity: int) -> None:
        self.trigger_event(self.DebtDeducted, transaction_id=transaction_id, quantity=quantity)

    def reverse_surrender(
        self, transaction_id: UUID, unit_type: str, quantity: int, advance: int = 0
    ) -> None:
        """Undo a surrender (by its reversal): the units, and the advance use they were."""
        self.ensure_open()
        self.trigger_event(
            self.SurrenderReversed,
            transaction_id=transaction_id,
            unit_type=unit_type,
            quantity=quantity,
        )
        if advance:
            self.trigger_event(
                self.AdvanceUseRecorded, transaction_id=transaction_id, quantity=-advance
            )

    def reverse_allocation(self, transaction_id: UUID, quantity: int, deducted: int = 0) -> None:
        """Undo an allocation: it no longer counts, and the debt it paid is owed again."""
        self.trigger_event(
            self.AllocationRecorded, transaction_id=transaction_id, quantity=-quantity
        )
        if deducted:
            self.trigger_event(self.DebtDeducted, transaction_id=transaction_id, quantity=-deducted)

    def ensure_debt_outstanding(self, quantity: int, transaction: str) -> None:
        """A carried debt can be withdrawn only while no allocation has paid it."""
        if quantity > self.debt_outstanding:
            raise NotReversible(
                f"{transaction} carried {quantity} t of debt into {self.year}, and an "
                f"allocation has paid {quantity - self.debt_outstanding} t of it: reverse "
                "that allocation first",
                transaction=transaction,
                account=self.account_id,
            )

    def record_emissions(self, emissions: int, reason: str, principal: str) -> bool:
        """Record the verified figure; False (and no event) when it is already the figure,
        so a repeated upload changes nothing and a different figure is a correction."""
        if isinstance(emissions, bool) or not isinstance(emissions, int) or emissions < 0:
            raise InvalidCommand(
                f"verified emissions must be a whole number >= 0, got {emissions!r}",
                reason="INVALID_EMISSIONS",
            )
        self.ensure_open()
        if emissions == self.verified_emissions:
            return False
        self.trigger_event(
            self.EmissionsVerified, emissions=emissions, reason=reason, principal=principal
        )
        return True


def _base_name(base: str) -> str:
    return {
        CcerCapBase.OBLIGATION.value: "the obligation",
        AdvanceUseBase.GAP.value: "the gap",
    }.get(base, "verified emissions")

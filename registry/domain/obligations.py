"""Compliance obligations, one per (compliance account, compliance year).

This holds the verified emissions of the year, the free allocation given for it, what
was surrendered against it, and, once the year is closed, the shortfall fixed then.
The rules it is judged by (``registry.domain.rules``) are passed in: they belong to
the year and the sector, not to one account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.enforcement import EnforcementStep, Fine
from registry.domain.errors import (
    AdvanceUseLimitExceeded,
    AdvanceUseNotAllowed,
    AdvanceUseNotEligible,
    CarryOverLimitExceeded,
    CcerCapExceeded,
    ComplianceYearClosed,
    CorrectionDeadlinePassed,
    EmissionsNotVerified,
    FineAlreadyRecorded,
    IneligibleVintage,
    InvalidCommand,
    NoShortfall,
    NotReversible,
    RowsInvalid,
)
from registry.domain.ids import NAMESPACE
from registry.domain.rules import (
    AdvanceUseBase,
    CarryOver,
    CcerCapBase,
    ComplianceRules,
    UnitDue,
    UnitLine,
    unit_line_violations,
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
    fixed, the company ordered to correct it, and what it does not correct by the
    deadline is deducted from the next year's allocation (EnforcementStep)."""


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
    enforcement: str = EnforcementStep.NONE.value
    """Where the enforcement of the shortfall stands (an ``EnforcementStep`` value,
    kept as its string so a snapshot restores it as it was)."""
    noticed_obligation: int = 0
    """The obligation fixed by the shortfall notice, which late surrender must meet."""
    correction_deadline: str = ""
    """ISO date: the last day a late surrender corrects the shortfall ("" if none)."""
    carried_forward: int = 0
    """What was still short after the deadline: debt on the next year's allocation."""
    fine: dict[str, Any] | None = None
    """The fine recorded (``Fine.as_dict``), None until one is."""
    unit_lines: tuple[dict[str, Any], ...] = ()
    """The verified figure by unit line (``UnitLine.as_dict``); one line without a
    category when the figure came without a breakdown. Empty (a snapshot taken before
    lines existed): judged as the whole company, exactly as then."""

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

    @property
    def lines(self) -> tuple[UnitLine, ...]:
        """The verified figure's unit lines (empty before verification)."""
        return tuple(UnitLine.from_dict(line) for line in self.unit_lines)

    def obligation(self, rules: ComplianceRules) -> int:
        """What must be surrendered (0 until emissions are verified): the unit lines'
        dues, then the company's cap (``ComplianceRules.obligation``)."""
        if self.verified_emissions is None:
            return 0
        return rules.obligation(self.verified_emissions, self.allocated, self.lines)

    def unit_dues(self, rules: ComplianceRules) -> tuple[UnitDue, ...]:
        """What each unit line owes before the company's cap (empty before verification)."""
        return rules.unit_dues(self.lines, self.allocated)

    def gap(self, rules: ComplianceRules) -> int:
        """The obligation not covered by the year's free allocation (0 before verification)."""
        if self.verified_emissions is None:
            return 0
        return rules.gap(self.verified_emissions, self.allocated, self.lines)

    def may_borrow(self, rules: ComplianceRules) -> bool:
        """Whether its gap rate, judged on its unit lines, opens advance use to it."""
        if self.verified_emissions is None:
            return False
        return rules.may_borrow(self.verified_emissions, self.allocated, self.lines)

    def status(self, rules: ComplianceRules, year_closed: bool = False) -> ComplianceStatus:
        if self.verified_emissions is None:
            return ComplianceStatus.NOT_VERIFIED
        if self.total_surrendered >= self.obligation(rules):
            return ComplianceStatus.COMPLIANT
        if self.closed or self.correcting or year_closed:
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
        """The verified figure for the year: the first one, or a correction of it. v2
        adds the recorder's provinces (a provincial regulator; empty: national); v3 its
        unit lines (``UnitLine.as_dict``; one line without a category when the figure
        has no breakdown)."""

        TOPIC = "registry.ComplianceObligation.EmissionsVerified"
        class_version = 3
        emissions: int
        reason: str
        principal: str
        provinces: list[str]
        lines: list[dict[str, Any]]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Recorded before provincial regulators existed: by a national one."""
            state["provinces"] = []

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            """A figure recorded before unit lines is one line: the whole company, no
            category, judged against the company's allocation (as it was)."""
            state["lines"] = [UnitLine.whole(state["emissions"]).as_dict()]

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.verified_emissions = self.emissions
            obligation.unit_lines = tuple(dict(line) for line in self.lines)

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
        """Deadline processing: the obligation and the shortfall, fixed. Written now
        only without a shortfall (a shortfall gets a ``ShortfallNotified`` instead);
        the previous version wrote it with one too, and carried that shortfall into
        the next year at once: such an obligation reads as ``DEBT_CARRIED``."""

        TOPIC = "registry.ComplianceObligation.Closed"
        obligation: int
        surrendered: int
        shortfall: int
        principal: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.closed = True
            obligation.shortfall = self.shortfall
            obligation.noticed_obligation = self.obligation
            if self.shortfall:  # the previous version's immediate deduction
                obligation.carried_forward = self.shortfall
                obligation.enforcement = EnforcementStep.DEBT_CARRIED.value

    class ShortfallNotified(Aggregate.Event):
        """Closing found a shortfall: the company is ordered to correct it by the
        deadline (Decree 775, Art. 24); until then a late surrender counts."""

        TOPIC = "registry.ComplianceObligation.ShortfallNotified"
        obligation: int
        surrendered: int
        shortfall: int
        correction_deadline: str
        principal: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.shortfall = self.shortfall
            obligation.noticed_obligation = self.obligation
            obligation.correction_deadline = self.correction_deadline
            obligation.enforcement = EnforcementStep.ORDERED_TO_CORRECT.value

    class ShortfallCorrected(Aggregate.Event):
        """A late surrender met the noticed obligation by the deadline: closed, with
        nothing to deduct."""

        TOPIC = "registry.ComplianceObligation.ShortfallCorrected"
        transaction_id: UUID

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.closed = True
            obligation.enforcement = EnforcementStep.CORRECTED.value

    class ShortfallDeducted(Aggregate.Event):
        """The deadline passed uncorrected: what is still short is carried as a debt
        into the next year (a ``DebtCarried`` there) and the obligation closes."""

        TOPIC = "registry.ComplianceObligation.ShortfallDeducted"
        quantity: int
        principal: str
        reason: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.closed = True
            obligation.carried_forward = self.quantity
            obligation.enforcement = EnforcementStep.DEBT_CARRIED.value

    class FineRecorded(Aggregate.Event):
        """The regulator's fine (Art. 24), recorded as data: not collected here."""

        TOPIC = "registry.ComplianceObligation.FineRecorded"
        multiple: str
        reference_price: str
        quantity: int
        amount: str
        principal: str
        reason: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.fine = {
                "multiple": self.multiple,
                "reference_price": self.reference_price,
                "quantity": self.quantity,
                "amount": self.amount,
                "principal": self.principal,
                "reason": self.reason,
            }

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
        return rules.ccer_cap(self._verified("CCER"), self.allocated, self.lines)

    def ccer_remaining(self, rules: ComplianceRules) -> int:
        """CCER tonnes that may still be surrendered (0 before verification)."""
        if self.verified_emissions is None:
            return 0
        return max(
            0,
            rules.ccer_cap(self.verified_emissions, self.allocated, self.lines)
            - self.surrendered.get(UnitType.CCER.value, 0),
        )

    def advance_use_limit(self, rules: ComplianceRules) -> int:
        """Next year's allowances this company may surrender for the year in all (0
        before verification, or when it may not borrow)."""
        if self.verified_emissions is None:
            return 0
        return rules.advance_use_limit(self.verified_emissions, self.allocated, self.lines)

    def _check_advance(self, rules: ComplianceRules, advance: int) -> None:
        if not rules.advance_use_bps:
            raise AdvanceUseNotAllowed(
                f"{self.year} allows no advance use of {self.year + 1} allowances",
                year=self.year,
                vintage=self.year + 1,
            )
        verified = self._verified("advance use")
        if not rules.may_borrow(verified, self.allocated, self.lines):
            gap = rules.gap(verified, self.allocated, self.lines)
            raise AdvanceUseNotEligible(
                f"advance use for {self.year} is open only to a gap rate of at least "
                f"{rules.advance_use_min_gap_bps} bps; {self.account_id}'s gap is {gap} t "
                f"of {verified} t verified",
                gap=gap,
                verified=verified,
                threshold_bps=rules.advance_use_min_gap_bps,
            )
        limit = rules.advance_use_limit(verified, self.allocated, self.lines)
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
        """Refuse carried tonnes over the limit: ``before`` (already carried under the
        same limit) plus ``carried`` (asked now) may not exceed it."""
        if rules.carry_over == CarryOver.NET_SALES.value and net_sales is None:
            return  # the net sales are not known here: judged where they are
        limit = rules.carry_over_limit(net_sales)
        if limit is None or before + carried <= limit:
            return
        if rules.carry_over == CarryOver.NET_SALES.value:
            how = (
                f"{rules.carry_over_net_sales_bps / 10_000:g} x net sales of {net_sales} t "
                f"({rules.carry_over_sales_from}..{rules.carry_over_sales_to}"
                f"{', counted as 0' if net_sales is not None and net_sales < 0 else ''}) + "
                f"{rules.carry_over_base_tonnes} t"
            )
        else:
            how = f"{self.year} accepts no carried vintage"
        raise CarryOverLimitExceeded(
            f"{self.account_id} asks to surrender {carried} t of carried vintages for "
            f"{self.year} with {before} t already carried under the same limit: "
            f"{before + carried} t would exceed its carry-over limit of {limit} t ({how})",
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

    @property
    def correcting(self) -> bool:
        """Under a shortfall notice, neither corrected nor deducted yet."""
        return self.enforcement == EnforcementStep.ORDERED_TO_CORRECT

    @property
    def remaining_shortfall(self) -> int:
        """Of the noticed shortfall, what late surrender has not covered yet."""
        if not self.correcting:
            return 0
        return max(0, self.noticed_obligation - self.total_surrendered)

    def enforcement_step(self, today: date) -> EnforcementStep:
        """The step, with an unmet deadline shown as overdue until deduction runs."""
        if self.correcting and today.isoformat() > self.correction_deadline:
            return EnforcementStep.CORRECTION_OVERDUE
        return EnforcementStep(self.enforcement)

    def close(self, rules: ComplianceRules, principal: str, deadline: date) -> int:
        """Fix the shortfall at the surrender deadline; returns it (0 when compliant or
        never verified: an unverified year is reported as such, not as a shortfall).
        A shortfall is not deducted yet: the company is ordered to correct it by
        ``deadline`` (Decree 775, Art. 24)."""
        self.ensure_open()
        if self.correcting:
            raise ComplianceYearClosed(
                f"compliance year {self.year} is closed", year=self.year, account=self.account_id
            )
        owed = self.obligation(rules)
        shortfall = max(0, owed - self.total_surrendered)
        if not shortfall:
            self.trigger_event(
                self.Closed,
                obligation=owed,
                surrendered=self.total_surrendered,
                shortfall=0,
                principal=principal,
            )
            return 0
        self.trigger_event(
            self.ShortfallNotified,
            obligation=owed,
            surrendered=self.total_surrendered,
            shortfall=shortfall,
            correction_deadline=deadline.isoformat(),
            principal=principal,
        )
        return shortfall

    def ensure_accepts_late_surrender(self, today: date) -> None:
        """A surrender after closing corrects a noticed shortfall until its deadline;
        otherwise the closed year takes none (a precise reason for each case)."""
        if not self.correcting:
            raise ComplianceYearClosed(
                f"compliance year {self.year} is closed"
                + (
                    f" and {self.account_id}'s shortfall was corrected"
                    if self.enforcement == EnforcementStep.CORRECTED
                    else f" and {self.account_id} has no shortfall to correct"
                    if self.enforcement == EnforcementStep.NONE
                    else f": {self.account_id}'s shortfall was deducted from {self.year + 1}"
                ),
                year=self.year,
                account=self.account_id,
                enforcement=self.enforcement,
            )
        if today.isoformat() > self.correction_deadline:
            raise CorrectionDeadlinePassed(
                f"the correction deadline for {self.account_id}'s {self.year} shortfall was "
                f"{self.correction_deadline}: the {self.remaining_shortfall} t still short "
                f"are deducted from the {self.year + 1} allocation, not surrendered late",
                year=self.year,
                account=self.account_id,
                correction_deadline=self.correction_deadline,
                remaining=self.remaining_shortfall,
            )

    def record_late_surrender(
        self, transaction_id: UUID, unit_type: str, quantity: int, advance: int = 0
    ) -> None:
        """A surrender inside the correction period: it counts towards the year, and
        once the noticed obligation is met the shortfall is corrected."""
        self.record_surrender(transaction_id, unit_type, quantity, advance)
        if self.correcting and self.remaining_shortfall == 0:
            self.trigger_event(self.ShortfallCorrected, transaction_id=transaction_id)

    def ensure_fixed(self) -> None:
        """A closed year's figures and surrenders stand, also under a shortfall notice
        (only a late surrender is added then)."""
        self.ensure_open()
        if self.correcting:
            raise ComplianceYearClosed(
                f"compliance year {self.year} is closed: its figures and surrenders are final",
                year=self.year,
                account=self.account_id,
            )

    def deduct_shortfall(self, today: date, principal: str, reason: str) -> int:
        """After the correction deadline, close what is still short as a debt on the
        next year (the caller carries it there); 0, and nothing recorded, when the
        obligation is not under a notice or its deadline has not passed."""
        if not self.correcting or today.isoformat() <= self.correction_deadline:
            return 0
        remaining = self.remaining_shortfall
        self.trigger_event(
            self.ShortfallDeducted, quantity=remaining, principal=principal, reason=reason
        )
        return remaining

    def record_fine(self, multiple: str, reference_price: str, principal: str, reason: str) -> bool:
        """Record the regulator's fine on the shortfall fixed at closing (the tonnes
        unsurrendered at the surrender deadline); the same fine again changes nothing
        (False), another one is refused."""
        if not self.shortfall:
            raise NoShortfall(
                f"{self.account_id} had no shortfall when {self.year} closed: nothing to fine",
                account=self.account_id,
                year=self.year,
            )
        recorded = Fine.of(multiple, reference_price, self.shortfall).as_dict()
        if self.fine is not None:
            if all(self.fine.get(k) == v for k, v in recorded.items()):
                return False
            raise FineAlreadyRecorded(
                f"{self.account_id} was already fined {self.fine['amount']} CNY for {self.year}",
                account=self.account_id,
                year=self.year,
                amount=str(self.fine["amount"]),
            )
        self.trigger_event(self.FineRecorded, principal=principal, reason=reason, **recorded)
        return True

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

    def record_emissions(
        self,
        emissions: int,
        reason: str,
        principal: str,
        provinces: Iterable[str] = (),
        lines: Sequence[UnitLine] = (),
    ) -> bool:
        """Record the verified figure and its unit lines (none: one line for the whole
        company), by ``principal`` acting in ``provinces`` (its jurisdiction, none if
        national); False (and no event) when both are already recorded, so a repeated
        upload changes nothing and a different figure or breakdown is a correction."""
        if isinstance(emissions, bool) or not isinstance(emissions, int) or emissions < 0:
            raise InvalidCommand(
                f"verified emissions must be a whole number >= 0, got {emissions!r}",
                reason="INVALID_EMISSIONS",
            )
        found = unit_line_violations(emissions, lines)
        if found:
            raise RowsInvalid(
                f"{len(found)} invalid unit line(s) for {self.account_id} {self.year}",
                violations=found,
            )
        stored = [line.as_dict() for line in (lines or (UnitLine.whole(emissions),))]
        self.ensure_fixed()
        if emissions == self.verified_emissions and stored == [
            line.as_dict() for line in self.lines or (UnitLine.whole(emissions),)
        ]:
            return False
        self.trigger_event(
            self.EmissionsVerified,
            emissions=emissions,
            reason=reason,
            principal=principal,
            provinces=sorted(provinces),
            lines=stored,
        )
        return True

    # -- surrenders invalidated by a confirmed origin detention (docs/origins.md) ------

    invalidated: int = 0
    """Tonnes surrendered for this year whose origin a confirmed detention forfeited:
    they no longer count (class defaults: snapshots taken before them still restore)."""
    replacement_owed: int = 0
    """Tonnes the company must surrender again to replace them, by ``replacement_deadline``."""
    replaced: int = 0
    replacement_deadline: str = ""
    """ISO date: the last day a replacement surrender is taken for a closed year."""

    class SurrenderInvalidated(Aggregate.Event):
        """Units of a surrender were of an origin whose detention was confirmed: they
        stop counting towards the year, and the company owes the same tonnes again by
        the deadline (as CORSIA and voluntary registries treat invalidated units)."""

        TOPIC = "registry.ComplianceObligation.SurrenderInvalidated"
        transaction_id: UUID
        unit_type: str
        quantity: int
        detention: str
        replacement_deadline: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation._add(self.unit_type, -self.quantity)
            obligation.invalidated += self.quantity
            obligation.replacement_owed += self.quantity
            obligation.replacement_deadline = self.replacement_deadline

    class ReplacementSurrendered(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.ReplacementSurrendered"
        transaction_id: UUID
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.replaced += self.quantity

    @property
    def replacement_remaining(self) -> int:
        return max(0, self.replacement_owed - self.replaced)

    def invalidate_surrender(
        self,
        transaction_id: UUID,
        unit_type: str,
        quantity: int,
        detention: str,
        deadline: date,
    ) -> None:
        """Stop counting ``quantity`` surrendered units of a forfeited origin; the same
        tonnes are owed again by ``deadline``."""
        if quantity <= 0:
            raise ValueError(f"an invalidation takes units, got {quantity}")
        self.trigger_event(
            self.SurrenderInvalidated,
            transaction_id=transaction_id,
            unit_type=unit_type,
            quantity=quantity,
            detention=detention,
            replacement_deadline=deadline.isoformat(),
        )

    def accepts_replacement(self, today: date) -> bool:
        """A closed year takes a surrender replacing invalidated units until the
        replacement deadline (inclusive)."""
        return self.replacement_remaining > 0 and today.isoformat() <= self.replacement_deadline

    def record_replacement(self, transaction_id: UUID, quantity: int) -> None:
        """Count a surrender towards the replacement owed (what exceeds it is a plain
        surrender)."""
        counted = min(quantity, self.replacement_remaining)
        if counted:
            self.trigger_event(
                self.ReplacementSurrendered, transaction_id=transaction_id, quantity=counted
            )


def _base_name(base: str) -> str:
    return {
        CcerCapBase.OBLIGATION.value: "the obligation",
        AdvanceUseBase.GAP.value: "the gap",
    }.get(base, "verified emissions")

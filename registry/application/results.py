"""What use cases return: plain, immutable views that carry no aggregate."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from registry.domain.accounts import Account, AccountState, AccountType
from registry.domain.conservation import conserved
from registry.domain.enforcement import EnforcementStep
from registry.domain.errors import RegistryError, error_for_reason
from registry.domain.holds import Hold, HoldStatus
from registry.domain.obligations import ComplianceObligation, ComplianceStatus
from registry.domain.rules import (
    DEFAULT_RULES,
    CarryOver,
    ComplianceRules,
    ComplianceYear,
    UnitDue,
)
from registry.domain.transactions import (
    Transaction,
    TransactionKind,
    TransactionRecord,
    TransactionStatus,
)
from registry.domain.units import SerialBlock, UnitClass, UnitType


@dataclass(frozen=True)
class TransactionResult:
    """A transaction as recorded. ``replayed``: this call found it already recorded."""

    party: str
    transaction_id: str
    kind: TransactionKind
    status: TransactionStatus
    source: str | None
    destination: str | None
    blocks: tuple[SerialBlock, ...]
    reason: str
    principal: str
    details: dict[str, Any]
    recorded_at: datetime
    refusal_reason: str = ""
    refusal_message: str = ""
    refusal_metadata: dict[str, str] = field(default_factory=dict)
    reversed: bool = False
    replayed: bool = False
    position: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is TransactionStatus.COMPLETED

    @property
    def quantity(self) -> int:
        return sum(b.quantity for b in self.blocks)

    @property
    def reference(self) -> str:
        """A transfer's reference (case, decision, ticket); "" for every other kind."""
        return str(self.details.get("reference", ""))

    def error(self) -> RegistryError | None:
        """The error a refusal stands for (None when completed)."""
        if self.ok:
            return None
        return error_for_reason(self.refusal_reason, self.refusal_message, **self.refusal_metadata)

    def as_replay(self) -> TransactionResult:
        return replace(self, replayed=True, position=None)

    @classmethod
    def of(
        cls, txn: Transaction, *, replayed: bool = False, position: int | None = None
    ) -> TransactionResult:
        return cls(
            party=txn.party,
            transaction_id=txn.client_id,
            kind=txn.kind,
            status=txn.status,
            source=txn.source,
            destination=txn.destination,
            blocks=tuple(txn.blocks),
            reason=txn.reason,
            principal=txn.principal,
            details=dict(txn.details),
            recorded_at=txn.created_on,
            refusal_reason=txn.refusal_reason,
            refusal_message=txn.refusal_message,
            refusal_metadata=dict(txn.refusal_metadata),
            reversed=txn.reversed_by is not None,
            replayed=replayed,
            position=position,
        )

    @classmethod
    def of_record(cls, record: TransactionRecord, position: int | None) -> TransactionResult:
        """A record just saved (``Transaction.completed_record``): what ``of`` answers
        for the transaction it creates, without replaying it into an aggregate. Made
        without the frozen dataclass's ``__init__`` (a ``object.__setattr__`` per field:
        one per trade of a batch), with every field it sets."""
        result = object.__new__(cls)
        completed = isinstance(record, Transaction.Completed)
        refused: Any = record  # the fields of whichever it is
        result.__dict__.update(
            party=record.party,
            transaction_id=record.client_id,
            kind=_KINDS[record.kind],
            status=_COMPLETED if completed else _REFUSED,
            source=record.source,
            destination=record.destination,
            blocks=tuple(refused.blocks) if completed else (),
            reason=record.reason,
            principal=record.principal,
            details=dict(record.details),
            recorded_at=record.timestamp,
            refusal_reason="" if completed else refused.refusal_reason,
            refusal_message="" if completed else refused.refusal_message,
            refusal_metadata={} if completed else dict(refused.refusal_metadata),
            reversed=False,
            replayed=False,
            position=position,
        )
        return result


_KINDS: dict[str, TransactionKind] = {kind.value: kind for kind in TransactionKind}
"""By value, without the enum's lookup (per trade)."""
_COMPLETED, _REFUSED = TransactionStatus.COMPLETED, TransactionStatus.REFUSED


class RowOutcome(StrEnum):
    """What became of one row of a batch of movements (trades, allocations)."""

    COMPLETED = "COMPLETED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    """Recorded earlier with the same content: answered, nothing moved again."""
    REFUSED = "REFUSED"
    """Refused for the ledger's state, and recorded: a retry gets the same refusal."""
    REJECTED = "REJECTED"
    """Malformed, or the id is taken by different content: nothing was recorded."""


@dataclass(frozen=True)
class RowResult:
    """One row of a batch of movements, by the client's id for it."""

    client_id: str
    outcome: RowOutcome
    reason: str = ""
    message: str = ""
    transaction: TransactionResult | None = None

    @property
    def position(self) -> int | None:
        return self.transaction.position if self.transaction else None

    @classmethod
    def of(cls, result: TransactionResult) -> RowResult:
        if result.ok:
            outcome = RowOutcome.ALREADY_COMPLETED if result.replayed else RowOutcome.COMPLETED
            return cls(result.transaction_id, outcome, transaction=result)
        return cls(
            result.transaction_id,
            RowOutcome.REFUSED,
            result.refusal_reason,
            result.refusal_message,
            result,
        )

    @classmethod
    def rejected(cls, client_id: str, error: RegistryError) -> RowResult:
        return cls(client_id, RowOutcome.REJECTED, error.reason, error.message)


class TradeOutcome(StrEnum):
    SETTLED = "SETTLED"
    ALREADY_SETTLED = "ALREADY_SETTLED"
    REFUSED = "REFUSED"
    """Refused for the ledger's state, and recorded: a retry gets the same refusal."""
    REJECTED = "REJECTED"
    """Malformed, or the id is taken by different content: nothing was recorded."""


@dataclass(frozen=True)
class TradeResult:
    trade_id: str
    outcome: TradeOutcome
    reason: str = ""
    message: str = ""
    transaction: TransactionResult | None = None

    @property
    def position(self) -> int | None:
        return self.transaction.position if self.transaction else None

    @classmethod
    def rejected(cls, trade_id: str, error: RegistryError) -> TradeResult:
        return cls.of_row(RowResult.rejected(trade_id, error))

    @classmethod
    def of_row(cls, row: RowResult) -> TradeResult:
        """A batch row in the settlement's own words (SETTLED for COMPLETED...)."""
        return cls(
            row.client_id, _TRADE_OUTCOMES[row.outcome], row.reason, row.message, row.transaction
        )


_TRADE_OUTCOMES = {
    RowOutcome.COMPLETED: TradeOutcome.SETTLED,
    RowOutcome.ALREADY_COMPLETED: TradeOutcome.ALREADY_SETTLED,
    RowOutcome.REFUSED: TradeOutcome.REFUSED,
    RowOutcome.REJECTED: TradeOutcome.REJECTED,
}


@dataclass(frozen=True)
class HoldResult:
    party: str
    hold_id: str
    account_id: str
    status: HoldStatus
    quantity: int
    blocks: tuple[SerialBlock, ...]
    expires_at: datetime | None
    settled_quantity: int
    refusal_reason: str = ""
    refusal_message: str = ""
    replayed: bool = False
    position: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is not HoldStatus.REFUSED

    @classmethod
    def of(
        cls,
        hold: Hold,
        blocks: tuple[SerialBlock, ...] = (),
        *,
        replayed: bool = False,
        position: int | None = None,
    ) -> HoldResult:
        return cls(
            party=hold.party,
            hold_id=hold.hold_id,
            account_id=hold.account_id,
            status=hold.status,
            quantity=hold.quantity,
            blocks=blocks,
            expires_at=hold.expires_at,
            settled_quantity=hold.settled_quantity,
            refusal_reason=hold.refusal_reason,
            refusal_message=hold.refusal_message,
            replayed=replayed,
            position=position,
        )


@dataclass(frozen=True)
class AccountView:
    account_id: str
    account_type: AccountType
    state: AccountState
    holder: dict[str, str]
    opened_at: datetime
    version: int

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(
            account.account_id,
            account.account_type,
            account.state,
            dict(account.holder),
            account.created_on,
            account.version,
        )


@dataclass(frozen=True)
class AccountResult:
    account: AccountView
    replayed: bool = False
    position: int | None = None


@dataclass(frozen=True)
class HoldingView:
    """One unit class in one account: total = available + held."""

    unit_class: UnitClass
    total: int
    held: int
    available: int
    blocks: tuple[SerialBlock, ...]


@dataclass(frozen=True)
class SupplyLine:
    unit_class: UnitClass
    issued: int
    held_in_accounts: int

    @property
    def balanced(self) -> bool:
        """Conservation for this class (``registry.domain.conservation``)."""
        return conserved(self.issued, self.held_in_accounts)


class EmissionsRowStatus(StrEnum):
    RECORDED = "RECORDED"
    """The first figure for the year, or a correction of it."""
    UNCHANGED = "UNCHANGED"
    """The figure was already recorded: nothing was stored."""


@dataclass(frozen=True)
class EmissionsRowResult:
    account_id: str
    compliance_year: int
    status: EmissionsRowStatus


@dataclass(frozen=True)
class EmissionsRecorded:
    """One result per row, in request order; ``position`` is None when nothing changed."""

    results: tuple[EmissionsRowResult, ...]
    position: int | None = None


ComplianceState = ComplianceStatus
"""The statuses DESIGN defines (``registry.domain.obligations.ComplianceStatus``)."""


@dataclass(frozen=True)
class ComplianceView:
    """Where a compliance account stands for one year, judged by the year's rules for
    its sector: the obligation (verified emissions, capped where the rules cap it),
    what was surrendered by unit type, what the year's closing fixed, and what the
    rules still allow: CCER, borrowing, carry-over."""

    account_id: str
    compliance_year: int
    state: ComplianceState
    verified_emissions: int | None
    obligation: int
    surrendered_cea: int
    surrendered_ccer: int
    outstanding: int
    allocated: int = 0
    advance_used: int = 0
    shortfall: int = 0
    """Fixed when the year closed (0 before)."""
    debt_carried: int = 0
    """The previous year's shortfall, deducted from this year's allocation."""
    debt_deducted: int = 0
    ccer_cap: int = 0
    """The most CCER the year accepts from the account (0 before verification)."""
    ccer_remaining: int = 0
    """CCER tonnes that may still be surrendered."""
    gap: int = 0
    """Obligation minus the year's free allocation, if positive."""
    may_borrow: bool = False
    """Whether the account may use next year's allowances (rules and gap rate)."""
    advance_use_limit: int = 0
    advance_use_remaining: int = 0
    """Next year's allowances that may still be surrendered for this year."""
    carry_over_limit: int | None = None
    """Tonnes of carried vintages the account may surrender; None: no limit. For a
    limit on net sales, b only until ``with_net_sales`` gives the sales."""
    net_sales: int | None = None
    """Net sales of allowances over the carry-over period, when the rule needs them
    and they were given."""
    rules: ComplianceRules = DEFAULT_RULES
    enforcement_step: EnforcementStep = EnforcementStep.NONE
    """Where the enforcement of the shortfall stands (Decree 775, Art. 24)."""
    correction_deadline: str = ""
    """ISO date: the last day a late surrender corrects the shortfall ("" if none)."""
    shortfall_remaining: int = 0
    """Of the noticed shortfall, what late surrender has not covered yet."""
    carried_forward: int = 0
    """What was carried as a debt into the next year's allocation."""
    fine: dict[str, Any] | None = None
    """The fine recorded: multiple, reference_price, quantity, amount (CNY strings)."""
    invalidated: int = 0
    """Surrendered tonnes a confirmed origin detention invalidated (docs/origins.md)."""
    replacement_remaining: int = 0
    """Of those, what the company has not replaced yet."""
    replacement_deadline: str = ""
    """ISO date: the last day to replace them ("" if nothing was invalidated)."""
    unit_lines: tuple[UnitDue, ...] = ()
    """What each unit line of the verified figure owes before the company's cap (empty
    for a figure without a breakdown: the whole company is the obligation's figures)."""

    @classmethod
    def of(
        cls,
        account_id: str,
        year: int,
        obligation: ComplianceObligation | None,
        rules: ComplianceRules = DEFAULT_RULES,
        year_closed: bool = False,
        today: date | None = None,
    ) -> ComplianceView:
        if obligation is None:
            return cls(
                account_id,
                year,
                ComplianceState.NOT_VERIFIED,
                None,
                0,
                0,
                0,
                0,
                carry_over_limit=rules.carry_over_limit(None),
                rules=rules,
            )
        today = today or datetime.now(UTC).date()
        surrendered = obligation.surrendered
        cea = surrendered.get(UnitType.CEA.value, 0)
        ccer = surrendered.get(UnitType.CCER.value, 0)
        owed = obligation.obligation(rules)
        verified = obligation.verified_emissions
        advance_limit = obligation.advance_use_limit(rules)
        return cls(
            account_id,
            year,
            obligation.status(rules, year_closed),
            verified,
            owed,
            cea,
            ccer,
            max(0, owed - cea - ccer),
            obligation.allocated,
            obligation.advance_used,
            obligation.shortfall,
            obligation.debt,
            obligation.debt_deducted,
            ccer_cap=0 if verified is None else obligation.ccer_cap(rules),
            ccer_remaining=obligation.ccer_remaining(rules),
            gap=obligation.gap(rules),
            may_borrow=obligation.may_borrow(rules),
            advance_use_limit=advance_limit,
            advance_use_remaining=max(0, advance_limit - obligation.advance_used),
            carry_over_limit=rules.carry_over_limit(None),
            rules=rules,
            enforcement_step=obligation.enforcement_step(today),
            correction_deadline=obligation.correction_deadline,
            shortfall_remaining=obligation.remaining_shortfall,
            carried_forward=obligation.carried_forward,
            fine=obligation.fine,
            invalidated=obligation.invalidated,
            replacement_remaining=obligation.replacement_remaining,
            replacement_deadline=obligation.replacement_deadline,
            unit_lines=tuple(d for d in obligation.unit_dues(rules) if d.line.category),
        )

    @property
    def net_sales_period(self) -> tuple[str, str] | None:
        """The (first, last) ISO days whose net sales the carry-over limit needs; None
        when the year's rule does not depend on them."""
        if self.rules.carry_over != CarryOver.NET_SALES.value:
            return None
        return self.rules.carry_over_sales_from, self.rules.carry_over_sales_to

    def with_net_sales(self, net_sales: int) -> ComplianceView:
        """The view with the carry-over limit the account's net sales give."""
        return replace(
            self, net_sales=net_sales, carry_over_limit=self.rules.carry_over_limit(net_sales)
        )


@dataclass(frozen=True)
class ComplianceRulesView:
    """A compliance year's rules by sector (``*``: every sector without its own), and
    whether the year is closed. ``version`` counts the changes so far."""

    year: int
    rules: dict[str, ComplianceRules]
    closed: bool
    version: int
    position: int | None = None

    @classmethod
    def of(
        cls, compliance_year: ComplianceYear | None, year: int, position: int | None = None
    ) -> ComplianceRulesView:
        if compliance_year is None:
            return cls(year, {}, False, 0, position)
        return cls(
            year,
            {
                sector: ComplianceRules.from_dict(data)
                for sector, data in sorted(compliance_year.rules.items())
            },
            compliance_year.closed,
            compliance_year.version,
            position,
        )

    def for_sector(self, sector: str) -> ComplianceRules:
        return self.rules.get(sector) or self.rules.get("*") or DEFAULT_RULES


@dataclass(frozen=True)
class YearClosing:
    """What closing a compliance year fixed: obligations closed, how many fell short
    and by how much in all (carried as debts into the next year's allocation)."""

    year: int
    obligations_closed: int
    shortfalls: int
    shortfall_tonnes: int
    replayed: bool = False
    position: int | None = None
    correction_deadline: str = ""
    """ISO date by which each shortfall may be corrected ("" when none)."""


@dataclass(frozen=True)
class FineResult:
    """A fine recorded on (account, year), and whether it was already there."""

    account_id: str
    compliance_year: int
    multiple: str
    reference_price: str
    quantity: int
    amount: str
    replayed: bool = False
    position: int | None = None


@dataclass(frozen=True)
class DeductionRun:
    """What the deduction step of a closed year did: obligations whose correction
    deadline had passed uncorrected, the tonnes carried into the next year, and how
    many obligations are still inside their correction period."""

    year: int
    deducted: int
    deducted_tonnes: int
    awaiting_deadline: int
    position: int | None = None


@dataclass(frozen=True)
class ComplianceReportLine:
    """Compliance accounts of one sector and province in one status, with tonnes."""

    sector: str
    province: str
    state: ComplianceState
    accounts: int = 0
    verified_emissions: int = 0
    obligation: int = 0
    surrendered_cea: int = 0
    surrendered_ccer: int = 0
    shortfall: int = 0

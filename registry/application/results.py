"""What use cases return: plain, immutable views that carry no aggregate."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from registry.domain.accounts import Account, AccountState, AccountType
from registry.domain.errors import RegistryError, error_for_reason
from registry.domain.holds import Hold, HoldStatus
from registry.domain.transactions import Transaction, TransactionKind, TransactionStatus
from registry.domain.units import SerialBlock, UnitClass


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

    def error(self) -> RegistryError | None:
        """The error a refusal stands for (None when completed)."""
        if self.ok:
            return None
        return error_for_reason(self.refusal_reason, self.refusal_message,
                                **self.refusal_metadata)

    def as_replay(self) -> TransactionResult:
        return replace(self, replayed=True, position=None)

    @classmethod
    def of(cls, txn: Transaction, *, replayed: bool = False,
           position: int | None = None) -> TransactionResult:
        return cls(
            party=txn.party, transaction_id=txn.client_id, kind=txn.kind, status=txn.status,
            source=txn.source, destination=txn.destination, blocks=tuple(txn.blocks),
            reason=txn.reason, principal=txn.principal, details=dict(txn.details),
            recorded_at=txn.created_on, refusal_reason=txn.refusal_reason,
            refusal_message=txn.refusal_message, refusal_metadata=dict(txn.refusal_metadata),
            reversed=txn.reversed_by is not None, replayed=replayed, position=position)


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
    def of(cls, result: TransactionResult) -> TradeResult:
        if result.ok:
            outcome = TradeOutcome.ALREADY_SETTLED if result.replayed else TradeOutcome.SETTLED
            return cls(result.transaction_id, outcome, transaction=result)
        return cls(result.transaction_id, TradeOutcome.REFUSED, result.refusal_reason,
                   result.refusal_message, result)

    @classmethod
    def rejected(cls, trade_id: str, error: RegistryError) -> TradeResult:
        return cls(trade_id, TradeOutcome.REJECTED, error.reason, error.message)


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
    def of(cls, hold: Hold, blocks: tuple[SerialBlock, ...] = (), *, replayed: bool = False,
           position: int | None = None) -> HoldResult:
        return cls(
            party=hold.party, hold_id=hold.hold_id, account_id=hold.account_id,
            status=hold.status, quantity=hold.quantity, blocks=blocks,
            expires_at=hold.expires_at, settled_quantity=hold.settled_quantity,
            refusal_reason=hold.refusal_reason, refusal_message=hold.refusal_message,
            replayed=replayed, position=position)


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
        return cls(account.account_id, account.account_type, account.state,
                   dict(account.holder), account.created_on, account.version)


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
        return self.issued == self.held_in_accounts

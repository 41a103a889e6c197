"""The ledger's rules for moving units: which kind of transaction may take units from
which type of account and deliver them to which, which accounts may hold units for an
exchange, and how an allocation or a true-up return counts towards the years of a
compliance obligation. Pure functions; the accounts themselves take and add the serial
blocks (``Account.debit`` and ``Account.credit``).
"""

from __future__ import annotations

from collections.abc import Iterable

from registry.domain import units
from registry.domain.accounts import AccountType
from registry.domain.errors import MovementNotAllowed, UnitsRetired
from registry.domain.obligations import MAX_YEAR, MIN_YEAR
from registry.domain.transactions import TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitSelector, UnitType

_T = AccountType
HOLDERS = frozenset({_T.COMPLIANCE, _T.TRADING, _T.PROJECT})
"""Account types that hold units for their holders (and so for an exchange's holds)."""
RETIREMENT = frozenset({_T.SURRENDER, _T.CANCELLATION})
OWNERS = frozenset({_T.COMPLIANCE, _T.TRADING})
"""Holders' accounts that take units from anywhere: a PROJECT account receives its
project's issued credits, and otherwise only what a successor or the exchange gives it."""

MOVEMENTS: dict[TransactionKind, tuple[frozenset[AccountType], frozenset[AccountType]]] = {
    TransactionKind.ALLOCATION: (
        frozenset({_T.ISSUANCE, _T.ALLOCATION_RESERVE}),
        frozenset({_T.COMPLIANCE}),
    ),
    TransactionKind.ALLOCATION_RETURN: (
        frozenset({_T.COMPLIANCE}),
        frozenset({_T.ALLOCATION_RESERVE}),
    ),
    TransactionKind.TRANSFER: (
        HOLDERS | {_T.ISSUANCE, _T.ALLOCATION_RESERVE},
        HOLDERS | {_T.ALLOCATION_RESERVE},
    ),
    TransactionKind.SETTLEMENT: (HOLDERS, HOLDERS),
    TransactionKind.SURRENDER: (frozenset({_T.COMPLIANCE}), frozenset({_T.SURRENDER})),
    TransactionKind.CANCELLATION: (
        HOLDERS | {_T.ISSUANCE, _T.ALLOCATION_RESERVE},
        frozenset({_T.CANCELLATION}),
    ),
    # Transfers outside the exchange (docs/ledger.md, "Transfers outside the exchange").
    TransactionKind.HOLDER_TRANSFER: (HOLDERS, OWNERS),
    TransactionKind.COURT_ORDER_TRANSFER: (HOLDERS, OWNERS),
    TransactionKind.MERGER_TRANSFER: (HOLDERS, HOLDERS),
    TransactionKind.SPLIT_TRANSFER: (HOLDERS, HOLDERS),
    TransactionKind.EXCHANGE_CORRECTION: (HOLDERS, HOLDERS),
    TransactionKind.FORFEITURE: (
        HOLDERS | {_T.ISSUANCE, _T.ALLOCATION_RESERVE},
        frozenset({_T.CANCELLATION}),
    ),
}
"""Which account types each kind may take units from and deliver them to.

ISSUANCE creates units (no source) and REVERSAL mirrors the transaction it undoes, so
neither appears here."""


SAME_HOLDER_TRANSFERS = frozenset({TransactionKind.HOLDER_TRANSFER})
"""Transfers an operator makes on its own: only between accounts of one holder."""
ORDERED_TRANSFERS = frozenset(
    {
        TransactionKind.COURT_ORDER_TRANSFER,
        TransactionKind.MERGER_TRANSFER,
        TransactionKind.SPLIT_TRANSFER,
        TransactionKind.EXCHANGE_CORRECTION,
    }
)
"""Transfers between holders outside the exchange: only a regulator's approved proposal
makes them, each with a reason and a reference (case number, decision, ticket)."""
TRANSFER_KINDS = SAME_HOLDER_TRANSFERS | ORDERED_TRANSFERS
"""The kinds that carry a ``reference`` in their transaction's details."""


def check_account_types(
    kind: TransactionKind, source: AccountType, destination: AccountType
) -> None:
    """Raise unless ``kind`` may move units from a ``source`` account to a
    ``destination`` account (retired units never move, except by a reversal)."""
    if source in RETIREMENT:
        raise UnitsRetired(
            f"units in {source} move only through a reversal of the transaction that put "
            "them there",
            kind=kind,
            source_type=source,
        )
    sources, destinations = MOVEMENTS[kind]
    if source not in sources or destination not in destinations:
        raise MovementNotAllowed(
            f"a {kind} cannot move units from a {source} account to a {destination} account",
            kind=kind,
            source_type=source,
            destination_type=destination,
        )


def check_holdable(account_type: AccountType, account_id: str) -> None:
    """Raise unless units in this account may be held for an exchange."""
    if account_type not in HOLDERS:
        raise MovementNotAllowed(
            f"units in a {account_type} account cannot be held", account=account_id
        )


def counts_towards_year(selector: UnitSelector, year: int) -> bool:
    """Whether units of this selector allocated (or returned) with vintage ``year``
    count towards that year's obligation: allowances only, and only for a year an
    obligation can have; offsets delivered this way are not allocation."""
    return selector.unit_type is UnitType.CEA and MIN_YEAR <= year <= MAX_YEAR


def return_carries_debt(selector: UnitSelector) -> bool:
    """Whether a true-up return of this selector may fall short: the part the account
    cannot cover is then carried as a debt into the next year (which must exist)."""
    year = selector.vintage
    return year is not None and MIN_YEAR <= year < MAX_YEAR and selector.unit_type is UnitType.CEA


def return_covered(selector: UnitSelector, quantity: int, holding: Holding) -> int:
    """How much of a true-up return of ``quantity`` moves units: what the account holds
    of the selector when the return may carry a debt, else all of it (or it is
    refused)."""
    if return_carries_debt(selector):
        return min(quantity, units.total(holding, selector))
    return quantity


def allowances_by_vintage(blocks: Iterable[SerialBlock]) -> dict[int, int]:
    """Allowance quantities by vintage (what an allocation counts towards each year)."""
    by_vintage: dict[int, int] = {}
    for block in blocks:
        if block.unit_class.unit_type is UnitType.CEA:
            vintage = block.unit_class.vintage
            by_vintage[vintage] = by_vintage.get(vintage, 0) + block.quantity
    return by_vintage

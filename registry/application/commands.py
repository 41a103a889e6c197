"""Commands that move units, validated before anything is stored.

A command's *fingerprint* is a hash of its content (not of who sent it): a retry with
the same client id and the same fingerprint is a replay; a different fingerprint under
the same id is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from registry.domain.accounts import NATIONAL_ACCOUNTS, AccountType, check_account_id
from registry.domain.errors import InvalidCommand
from registry.domain.ids import check_client_id, check_party
from registry.domain.ledger import ORDERED_TRANSFERS, TRANSFER_KINDS
from registry.domain.obligations import check_year
from registry.domain.reasons import check_reason as check_reason_text
from registry.domain.restrictions import check_reference
from registry.domain.rules import UnitLine
from registry.domain.transactions import TransactionKind
from registry.domain.units import UnitClass, UnitSelector, parse_unit_type

MAX_QUANTITY = 10**12
"""Far above a national year's cap (~8 Gt), low enough to catch unit mistakes."""

MAX_BATCH = 10_000
MAX_BATCH_BYTES = 8 * 1024 * 1024
"""A batch call's request, serialised: 10,000 trades with 128-character ids are about
1.7 MB, so every legal batch of trades fits; it bounds what one call makes the event
store write under its table lock (a batch's events are several times its request)."""


def check_batch(count: int, size_bytes: int, field: str, what: str) -> None:
    """The one guard of a batch call: not empty, at most ``MAX_BATCH`` rows and
    ``MAX_BATCH_BYTES`` bytes; the error names the limit so a client can split."""
    if count == 0:
        raise InvalidCommand(f"no {what}", reason="EMPTY_BATCH", field=field)
    if count > MAX_BATCH:
        raise InvalidCommand(
            f"at most {MAX_BATCH} {field} per call, got {count}",
            reason="BATCH_TOO_LARGE",
            field=field,
            limit=MAX_BATCH,
        )
    if size_bytes > MAX_BATCH_BYTES:
        raise InvalidCommand(
            f"the batch is {size_bytes} bytes, over the limit of {MAX_BATCH_BYTES}: send "
            "its rows in smaller batches",
            reason="BATCH_BYTES_TOO_LARGE",
            field=field,
            limit_bytes=MAX_BATCH_BYTES,
            size_bytes=size_bytes,
        )


def check_quantity(quantity: int) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidCommand(
            f"quantity must be a whole number of tonnes, got {quantity!r}",
            reason="INVALID_QUANTITY",
        )
    if quantity <= 0:
        raise InvalidCommand(
            f"quantity must be positive, got {quantity}", reason="QUANTITY_NOT_POSITIVE"
        )
    if quantity > MAX_QUANTITY:
        raise InvalidCommand(
            f"quantity {quantity} exceeds {MAX_QUANTITY}", reason="QUANTITY_TOO_LARGE"
        )
    return quantity


def check_emissions(emissions: int) -> int:
    """Verified emissions: whole tonnes CO2e, zero allowed (a plant that did not run)."""
    if isinstance(emissions, bool) or not isinstance(emissions, int) or emissions < 0:
        raise InvalidCommand(
            f"verified emissions must be a whole number >= 0, got {emissions!r}",
            reason="INVALID_EMISSIONS",
        )
    if emissions > MAX_QUANTITY:
        raise InvalidCommand(
            f"verified emissions {emissions} exceed {MAX_QUANTITY}", reason="EMISSIONS_TOO_LARGE"
        )
    return emissions


def check_reason(reason: str) -> str:
    """A transaction's reason: optional, and not named as a field in the error."""
    return check_reason_text(reason, required=False, name_field=False)


def fingerprint(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Movement:
    """A request to move (or, for ISSUANCE, create) units. Validated on construction."""

    client_id: str
    kind: TransactionKind
    source: str | None
    destination: str | None
    quantity: int | None
    reason: str = ""
    selector: UnitSelector | None = None
    unit_class: UnitClass | None = None
    hold_id: str | None = None
    compliance_year: int | None = None
    reverses: tuple[str, str] | None = None
    trade_date: date | None = None
    reference: str | None = None
    """A transfer's reference (``TRANSFER_KINDS``): the court case, merger or split
    decision, or exchange ticket it carries out; the operator's own, optionally."""
    override_restrictions: bool = False
    """A reversal only: move the original's serials back even where a block freeze or
    an origin detention covers them (an approved proposal that says so explicitly)."""
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        check_client_id(self.client_id, "transaction id")
        check_reason(self.reason)
        for account in (self.source, self.destination):
            if account is not None:
                check_account_id(account)
        if self.quantity is not None:
            check_quantity(self.quantity)
        if self.kind is TransactionKind.REVERSAL:
            if self.reverses is None:
                raise InvalidCommand(
                    "a reversal names the transaction it reverses",
                    reason="MISSING_ID",
                    field="reverses",
                )
            # both name a recorded transaction: malformed, they are refused as input here,
            # not recorded as a reversal refused for an unknown transaction
            check_party(self.reverses[0], "original party")
            check_client_id(self.reverses[1], "reversed transaction id")
        elif self.kind is TransactionKind.ISSUANCE:
            if self.unit_class is None or self.quantity is None:
                raise InvalidCommand(
                    "an issuance needs a unit class and a quantity", reason="MISSING_UNIT_CLASS"
                )
        else:
            if self.source is None or self.destination is None:
                raise InvalidCommand(
                    f"a {self.kind} needs a source and a destination account",
                    reason="MISSING_ACCOUNT",
                )
            if self.source == self.destination:
                raise InvalidCommand(
                    f"source and destination are both {self.source}", reason="SAME_ACCOUNT"
                )
            if self.selector is None or self.quantity is None:
                raise InvalidCommand(
                    f"a {self.kind} needs a unit type and a quantity", reason="MISSING_UNITS"
                )
        if self.kind is TransactionKind.SURRENDER:
            if self.compliance_year is None:
                raise InvalidCommand(
                    "a surrender names its compliance year", reason="INVALID_COMPLIANCE_YEAR"
                )
            check_year(self.compliance_year)
        if self.hold_id is not None:
            check_client_id(self.hold_id, "hold id")
        self._check_transfer()
        if self.override_restrictions and self.kind is not TransactionKind.REVERSAL:
            raise InvalidCommand(
                "only a reversal may override a restriction",
                reason="INVALID_ARGUMENT",
                field="override_restrictions",
            )
        object.__setattr__(self, "fingerprint", fingerprint(self.content()))

    def _check_transfer(self) -> None:
        """A transfer outside the exchange says why; one a regulator orders also names
        its reference. No other kind carries a reference."""
        if self.kind not in TRANSFER_KINDS:
            if self.reference is not None:
                raise InvalidCommand(
                    f"a {self.kind} carries no reference",
                    reason="UNEXPECTED_REFERENCE",
                    field="reference",
                )
            return
        check_reason_text(self.reason)
        if self.reference is not None or self.kind in ORDERED_TRANSFERS:
            check_reference(self.reference or "")

    def content(self) -> dict[str, Any]:
        reference = {"reference": self.reference} if self.reference is not None else {}
        return reference | {
            "kind": self.kind.value,
            "source": self.source,
            "destination": self.destination,
            "quantity": self.quantity,
            "reason": self.reason,
            "selector": self.selector.as_dict() if self.selector else None,
            "unit_class": self.unit_class.key if self.unit_class else None,
            "hold_id": self.hold_id,
            "compliance_year": self.compliance_year,
            "reverses": list(self.reverses) if self.reverses else None,
            "trade_date": self.trade_date.isoformat() if self.trade_date else None,
            # absent unless set, so the fingerprints of earlier commands stay the same
            # ("reference" likewise, above)
            **({"override_restrictions": True} if self.override_restrictions else {}),
        }

    def details(self) -> dict[str, Any]:
        """What the transaction record keeps beyond source, destination and blocks."""
        return {
            k: v
            for k, v in self.content().items()
            if v is not None and k not in ("kind", "source", "destination", "reason")
        }


@dataclass(frozen=True)
class Trade:
    """One exchange trade to settle: seller to buyer, optionally against a hold."""

    trade_id: str
    seller: str
    buyer: str
    unit_type: str
    quantity: int
    vintage: int | None = None
    hold_id: str | None = None
    trade_date: date | None = None
    project: str | None = None
    """CCER only: the project the units come from (None: any, oldest class first)."""

    def movement(self) -> Movement:
        return Movement(
            client_id=self.trade_id,
            kind=TransactionKind.SETTLEMENT,
            source=self.seller,
            destination=self.buyer,
            quantity=self.quantity,
            selector=UnitSelector(parse_unit_type(self.unit_type), self.vintage, self.project),
            hold_id=self.hold_id,
            trade_date=self.trade_date,
            reason="exchange trade",
        )


@dataclass(frozen=True)
class AllocationRow:
    """One row of an allocation table: free allowances for one compliance account."""

    transaction_id: str
    account_id: str
    unit_type: str
    quantity: int
    reason: str = ""
    vintage: int | None = None
    source: str | None = None
    """The account the units come from; None means the allocation reserve."""
    returned: bool = False
    """A true-up return: the units go from the account back to the allocation reserve
    (``Registry.return_allocation``); what it cannot cover becomes next year's debt."""

    def movement(self) -> Movement:
        """The same movement ``Registry.allocate`` (or ``return_allocation``) makes, so
        either call replays the other."""
        reserve = NATIONAL_ACCOUNTS[AccountType.ALLOCATION_RESERVE]
        selector = UnitSelector(parse_unit_type(self.unit_type), self.vintage)
        if self.returned:
            if self.vintage is None:
                raise InvalidCommand(
                    "a return names the vintage it gives back (the allocation year)",
                    reason="MISSING_FIELD",
                    field="vintage",
                )
            if self.source:
                raise InvalidCommand(
                    "a return goes back to the allocation reserve: leave the source empty",
                    reason="UNEXPECTED_SOURCE",
                    field="source",
                )
            return Movement(
                client_id=self.transaction_id,
                kind=TransactionKind.ALLOCATION_RETURN,
                source=self.account_id,
                destination=reserve,
                quantity=self.quantity,
                reason=self.reason,
                selector=selector,
            )
        return Movement(
            client_id=self.transaction_id,
            kind=TransactionKind.ALLOCATION,
            source=self.source or reserve,
            destination=self.account_id,
            quantity=self.quantity,
            reason=self.reason,
            selector=selector,
        )


@dataclass(frozen=True)
class EmissionsRow:
    """One verified emissions figure: tonnes CO2e of a compliance account in one year,
    optionally by unit line (a power company's units or unit categories)."""

    account_id: str
    compliance_year: int
    verified_emissions: int
    reason: str
    unit_lines: tuple[UnitLine, ...] = ()

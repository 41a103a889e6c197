"""Transactions: the record of every movement of units, completed or refused.

A transaction's aggregate id is derived from (submitting party, client id), so the
event store refuses a second creation: a retry can never move units twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from hashlib import sha1
from typing import Any
from uuid import UUID, SafeUUID

from eventsourcing.domain import Aggregate, datetime_now_with_tzinfo

from registry.domain.errors import (
    AlreadyReversed,
    NotReversible,
    RegistryError,
)
from registry.domain.ids import NAMESPACE, check_party
from registry.domain.units import SerialBlock

_NAMESPACE = NAMESPACE.bytes
_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_SET = (0x8000 << 48) | (5 << 76)


def fast_uuid5(name: str) -> UUID:
    """``uuid5(NAMESPACE, name)``, the same UUID, without ``UUID.__init__``'s checks
    and keyword handling (a settled trade's record needs a new one; it was a twentieth
    of a trade's work): the SHA-1 of namespace and name, with version 5 and the RFC 4122
    variant set, as ``uuid.uuid5`` makes it."""
    value = int.from_bytes(sha1(_NAMESPACE + name.encode()).digest()[:16]) & _CLEAR | _SET
    made = object.__new__(UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", SafeUUID.unknown)
    return made


class TransactionKind(StrEnum):
    ISSUANCE = "ISSUANCE"
    ALLOCATION = "ALLOCATION"
    ALLOCATION_RETURN = "ALLOCATION_RETURN"
    TRANSFER = "TRANSFER"
    SETTLEMENT = "SETTLEMENT"
    SURRENDER = "SURRENDER"
    CANCELLATION = "CANCELLATION"
    REVERSAL = "REVERSAL"
    HOLDER_TRANSFER = "HOLDER_TRANSFER"
    """An operator's transfer between two accounts of one holder (``TransferUnits``)."""
    COURT_ORDER_TRANSFER = "COURT_ORDER_TRANSFER"
    """Transfers outside the exchange that a regulator's approved proposal carries out,
    each naming its reference: a court's enforcement order (the case number), a merger
    or a split of a company (the decision that approved it), the correction of an
    exchange's settlement error (the exchange's ticket)."""
    MERGER_TRANSFER = "MERGER_TRANSFER"
    SPLIT_TRANSFER = "SPLIT_TRANSFER"
    EXCHANGE_CORRECTION = "EXCHANGE_CORRECTION"
    FORFEITURE = "FORFEITURE"
    """Units of an origin whose detention was confirmed, cancelled wherever they were
    (``registry.application.origins``): a regulatory cancellation carrying the
    detention's reference."""


class TransactionStatus(StrEnum):
    COMPLETED = "COMPLETED"
    REFUSED = "REFUSED"


@dataclass(frozen=True)
class Principal:
    """Who asked: a party (scopes client ids) and a named user or system within it."""

    party: str
    name: str

    def __post_init__(self) -> None:
        check_party(self.party)

    def __str__(self) -> str:
        return f"{self.party}/{self.name}"


SYSTEM = Principal("registry", "system")
"""The registry itself, acting on its own (opening the national accounts, expiring
holds)."""


class Transaction(Aggregate):
    """The immutable record of one requested movement: completed, or refused with why."""

    TOPIC = "registry.Transaction"

    def __init__(self) -> None:
        self.party = ""
        self.client_id = ""
        self.kind_name = ""
        self.status_name = ""
        self.source: str | None = None
        self.destination: str | None = None
        self.blocks: list[SerialBlock] = []
        self.reason = ""
        self.principal = ""
        self.fingerprint = ""
        self.details: dict[str, Any] = {}
        self.refusal_reason = ""
        self.refusal_message = ""
        self.refusal_metadata: dict[str, str] = {}
        self.reversed_by: UUID | None = None

    @staticmethod
    @lru_cache(maxsize=65_536)
    def id_for(party: str, client_id: str) -> UUID:
        """Cached: a command asks for its transaction's id more than once (uuid5 hashes).
        A batch's ids are all new: ``fast_uuid5`` makes them (``uuid5``'s, cheaper)."""
        return fast_uuid5(f"transaction:{party}:{client_id}")

    @property
    def kind(self) -> TransactionKind:
        return TransactionKind(self.kind_name)

    @property
    def status(self) -> TransactionStatus:
        return TransactionStatus(self.status_name)

    @property
    def quantity(self) -> int:
        return sum(b.quantity for b in self.blocks)

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.Transaction.Created"

    class Completed(Aggregate.Created):
        TOPIC = "registry.Transaction.Completed"
        party: str
        client_id: str
        kind: str
        source: str | None
        destination: str | None
        blocks: list[SerialBlock]
        reason: str
        principal: str
        fingerprint: str
        details: dict[str, Any]

        def apply(self, txn: Transaction) -> None:
            txn._record(self, TransactionStatus.COMPLETED)
            txn.blocks = list(self.blocks)

    class Refused(Aggregate.Created):
        TOPIC = "registry.Transaction.Refused"
        party: str
        client_id: str
        kind: str
        source: str | None
        destination: str | None
        reason: str
        principal: str
        fingerprint: str
        details: dict[str, Any]
        refusal_reason: str
        refusal_message: str
        refusal_metadata: dict[str, str]

        def apply(self, txn: Transaction) -> None:
            txn._record(self, TransactionStatus.REFUSED)
            txn.refusal_reason = self.refusal_reason
            txn.refusal_message = self.refusal_message
            txn.refusal_metadata = dict(self.refusal_metadata)

    class Reversed(Aggregate.Event):
        TOPIC = "registry.Transaction.Reversed"
        reversal_id: UUID

        def apply(self, txn: Transaction) -> None:
            txn.reversed_by = self.reversal_id

    def _record(self, event: Completed | Refused, status: TransactionStatus) -> None:
        self.party = event.party
        self.client_id = event.client_id
        self.kind_name = event.kind
        self.status_name = status.value
        self.source = event.source
        self.destination = event.destination
        self.reason = event.reason
        self.principal = event.principal
        self.fingerprint = event.fingerprint
        self.details = dict(event.details)

    # -- creation -------------------------------------------------------------------

    @classmethod
    def complete(
        cls,
        *,
        party: str,
        client_id: str,
        kind: TransactionKind,
        source: str | None,
        destination: str,
        blocks: list[SerialBlock],
        reason: str,
        principal: Principal,
        fingerprint: str,
        details: dict[str, Any],
    ) -> Transaction:
        return cls._create(
            cls.Completed,
            id=cls.id_for(party, client_id),
            party=party,
            client_id=client_id,
            kind=kind.value,
            source=source,
            destination=destination,
            blocks=blocks,
            reason=reason,
            principal=str(principal),
            fingerprint=fingerprint,
            details=details,
        )

    @classmethod
    def refuse(
        cls,
        *,
        party: str,
        client_id: str,
        kind: TransactionKind,
        source: str | None,
        destination: str | None,
        reason: str,
        principal: Principal,
        fingerprint: str,
        details: dict[str, Any],
        error: RegistryError,
    ) -> Transaction:
        return cls._create(
            cls.Refused,
            id=cls.id_for(party, client_id),
            party=party,
            client_id=client_id,
            kind=kind.value,
            source=source,
            destination=destination,
            reason=reason,
            principal=str(principal),
            fingerprint=fingerprint,
            details=details,
            refusal_reason=error.reason,
            refusal_message=error.message,
            refusal_metadata=dict(error.metadata),
        )

    # -- records without an aggregate ---------------------------------------------

    @classmethod
    def completed_record(
        cls,
        *,
        party: str,
        client_id: str,
        kind: TransactionKind,
        source: str | None,
        destination: str,
        blocks: list[SerialBlock],
        reason: str,
        principal: Principal,
        fingerprint: str,
        details: dict[str, Any],
    ) -> Transaction.Completed:
        """The event ``complete`` records, made without the aggregate around it: a
        movement only saves its record, so building (and mutating) a ``Transaction``
        per trade was a third of a settlement's work. Same class, same fields, same
        id: the store keeps it exactly as it kept ``complete``'s."""
        event: Any = cls.Completed  # its fields are made at run time
        completed: Transaction.Completed = event(
            originator_id=cls.id_for(party, client_id),
            originator_version=1,
            timestamp=datetime_now_with_tzinfo(),
            originator_topic=cls.TOPIC,
            party=party,
            client_id=client_id,
            kind=kind.value,
            source=source,
            destination=destination,
            blocks=blocks,
            reason=reason,
            principal=str(principal),
            fingerprint=fingerprint,
            details=details,
        )
        return completed

    @classmethod
    def refused_record(
        cls,
        *,
        party: str,
        client_id: str,
        kind: TransactionKind,
        source: str | None,
        destination: str | None,
        reason: str,
        principal: Principal,
        fingerprint: str,
        details: dict[str, Any],
        error: RegistryError,
    ) -> Transaction.Refused:
        """The event ``refuse`` records, without the aggregate (see ``completed_record``)."""
        event: Any = cls.Refused
        refused: Transaction.Refused = event(
            originator_id=cls.id_for(party, client_id),
            originator_version=1,
            timestamp=datetime_now_with_tzinfo(),
            originator_topic=cls.TOPIC,
            party=party,
            client_id=client_id,
            kind=kind.value,
            source=source,
            destination=destination,
            reason=reason,
            principal=str(principal),
            fingerprint=fingerprint,
            details=details,
            refusal_reason=error.reason,
            refusal_message=error.message,
            refusal_metadata=dict(error.metadata),
        )
        return refused

    # -- commands -----------------------------------------------------------------

    def ensure_reversible(self) -> None:
        ref = f"{self.party}:{self.client_id}"
        if self.status is not TransactionStatus.COMPLETED:
            raise NotReversible(
                f"transaction {ref} was refused; nothing to reverse", transaction=ref
            )
        if self.kind in (TransactionKind.ISSUANCE, TransactionKind.REVERSAL):
            raise NotReversible(
                f"a {self.kind} cannot be reversed"
                + ("; cancel the units instead" if self.kind is TransactionKind.ISSUANCE else ""),
                transaction=ref,
            )
        if self.reversed_by is not None:
            raise AlreadyReversed(f"transaction {ref} was already reversed", transaction=ref)

    def mark_reversed(self, reversal_id: UUID) -> None:
        self.ensure_reversible()
        self.trigger_event(self.Reversed, reversal_id=reversal_id)


TransactionRecord = Transaction.Completed | Transaction.Refused
"""A movement's record as it is saved: the one event of its ``Transaction``."""

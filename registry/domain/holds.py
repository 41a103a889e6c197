"""Exchange holds: units reserved for an open sell order until settled, released or expired.

The hold aggregate records the lifecycle; the account records which serial blocks are
held, so that nothing else can move them. Both change in the same atomic save.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import (
    HoldExpired,
    HoldMismatch,
    HoldNotActive,
    HoldNotExpired,
    InvalidCommand,
    RegistryError,
)
from registry.domain.ids import NAMESPACE
from registry.domain.transactions import Principal
from registry.domain.units import UnitSelector

MAX_HOLD_SECONDS = 31 * 24 * 3600


class HoldStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SETTLED = "SETTLED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    REFUSED = "REFUSED"


def check_timeout(seconds: int) -> int:
    if not isinstance(seconds, int) or not 0 < seconds <= MAX_HOLD_SECONDS:
        raise InvalidCommand(
            f"hold timeout must be 1..{MAX_HOLD_SECONDS} seconds, got {seconds!r}",
            reason="INVALID_TIMEOUT",
        )
    return seconds


class Hold(Aggregate):
    TOPIC = "registry.Hold"

    def __init__(self) -> None:
        self.party = ""
        self.hold_id = ""
        self.account_id = ""
        self.selector: dict[str, Any] = {}
        self.quantity = 0
        self.timeout_seconds = 0
        self.expires_at: datetime | None = None
        self.principal = ""
        self.fingerprint = ""
        self.status_name = HoldStatus.ACTIVE.value
        self.settled_quantity = 0
        self.settled_by: UUID | None = None
        self.refusal_reason = ""
        self.refusal_message = ""
        self.refusal_metadata: dict[str, str] = {}

    @staticmethod
    def id_for(party: str, hold_id: str) -> UUID:
        return uuid5(NAMESPACE, f"hold:{party}:{hold_id}")

    @property
    def status(self) -> HoldStatus:
        return HoldStatus(self.status_name)

    @property
    def unit_selector(self) -> UnitSelector:
        return UnitSelector(**self.selector)

    @property
    def ref(self) -> str:
        return f"{self.party}:{self.hold_id}"

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.Hold.Created"

    class Placed(Aggregate.Created):
        TOPIC = "registry.Hold.Placed"
        party: str
        hold_id: str
        account_id: str
        selector: dict[str, Any]
        quantity: int
        timeout_seconds: int
        expires_at: datetime
        principal: str
        fingerprint: str

        def apply(self, hold: Hold) -> None:
            hold._record(self)
            hold.expires_at = self.expires_at

    class Refused(Aggregate.Created):
        TOPIC = "registry.Hold.Refused"
        party: str
        hold_id: str
        account_id: str
        selector: dict[str, Any]
        quantity: int
        timeout_seconds: int
        principal: str
        fingerprint: str
        refusal_reason: str
        refusal_message: str
        refusal_metadata: dict[str, str]

        def apply(self, hold: Hold) -> None:
            hold._record(self)
            hold.status_name = HoldStatus.REFUSED.value
            hold.refusal_reason = self.refusal_reason
            hold.refusal_message = self.refusal_message
            hold.refusal_metadata = dict(self.refusal_metadata)

    class Settled(Aggregate.Event):
        TOPIC = "registry.Hold.Settled"
        transaction_id: UUID
        quantity: int
        released_quantity: int

        def apply(self, hold: Hold) -> None:
            hold.status_name = HoldStatus.SETTLED.value
            hold.settled_quantity = self.quantity
            hold.settled_by = self.transaction_id

    class Released(Aggregate.Event):
        TOPIC = "registry.Hold.Released"
        principal: str
        reason: str

        def apply(self, hold: Hold) -> None:
            hold.status_name = HoldStatus.RELEASED.value

    class Expired(Aggregate.Event):
        TOPIC = "registry.Hold.Expired"
        principal: str

        def apply(self, hold: Hold) -> None:
            hold.status_name = HoldStatus.EXPIRED.value

    def _record(self, event: Placed | Refused) -> None:
        self.party = event.party
        self.hold_id = event.hold_id
        self.account_id = event.account_id
        self.selector = dict(event.selector)
        self.quantity = event.quantity
        self.timeout_seconds = event.timeout_seconds
        self.principal = event.principal
        self.fingerprint = event.fingerprint

    # -- creation -------------------------------------------------------------------

    @classmethod
    def place(
        cls,
        *,
        party: str,
        hold_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        timeout_seconds: int,
        now: datetime,
        principal: Principal,
        fingerprint: str,
    ) -> Hold:
        return cls._create(
            cls.Placed,
            id=cls.id_for(party, hold_id),
            party=party,
            hold_id=hold_id,
            account_id=account_id,
            selector=selector.as_dict(),
            quantity=quantity,
            timeout_seconds=timeout_seconds,
            expires_at=now + timedelta(seconds=timeout_seconds),
            principal=str(principal),
            fingerprint=fingerprint,
        )

    @classmethod
    def refuse(
        cls,
        *,
        party: str,
        hold_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        timeout_seconds: int,
        principal: Principal,
        fingerprint: str,
        error: RegistryError,
    ) -> Hold:
        return cls._create(
            cls.Refused,
            id=cls.id_for(party, hold_id),
            party=party,
            hold_id=hold_id,
            account_id=account_id,
            selector=selector.as_dict(),
            quantity=quantity,
            timeout_seconds=timeout_seconds,
            principal=str(principal),
            fingerprint=fingerprint,
            refusal_reason=error.reason,
            refusal_message=error.message,
            refusal_metadata=dict(error.metadata),
        )

    # -- guards and commands ------------------------------------------------------

    def is_due(self, now: datetime) -> bool:
        return (
            self.status is HoldStatus.ACTIVE
            and self.expires_at is not None
            and now >= self.expires_at
        )

    def ensure_active(self, now: datetime) -> None:
        if self.status is not HoldStatus.ACTIVE:
            raise HoldNotActive(
                f"hold {self.ref} is {self.status}", hold=self.ref, status=self.status
            )
        if self.is_due(now):
            raise HoldExpired(f"hold {self.ref} expired at {self.expires_at}", hold=self.ref)

    def ensure_matches(self, account_id: str, selector: UnitSelector, quantity: int) -> None:
        """A trade against this hold must sell from its account, its units, at most its size."""
        held = self.unit_selector
        if account_id != self.account_id:
            raise HoldMismatch(
                f"hold {self.ref} is on account {self.account_id}, not {account_id}", hold=self.ref
            )
        if selector.unit_type is not held.unit_type or (
            selector.vintage is not None and selector.vintage != held.vintage
        ):
            raise HoldMismatch(f"hold {self.ref} holds {held}, not {selector}", hold=self.ref)
        if quantity > self.quantity:
            raise HoldMismatch(
                f"hold {self.ref} holds {self.quantity} units; {quantity} cannot settle against it",
                hold=self.ref,
            )

    def settle(self, transaction_id: UUID, quantity: int, now: datetime) -> None:
        self.ensure_active(now)
        self.trigger_event(
            self.Settled,
            transaction_id=transaction_id,
            quantity=quantity,
            released_quantity=self.quantity - quantity,
        )

    def release(self, principal: Principal, reason: str) -> None:
        if self.status is not HoldStatus.ACTIVE:
            raise HoldNotActive(
                f"hold {self.ref} is {self.status}", hold=self.ref, status=self.status
            )
        self.trigger_event(self.Released, principal=str(principal), reason=reason)

    def expire(self, principal: Principal, now: datetime) -> None:
        if self.status is not HoldStatus.ACTIVE:
            raise HoldNotActive(
                f"hold {self.ref} is {self.status}", hold=self.ref, status=self.status
            )
        if not self.is_due(now):
            raise HoldNotExpired(f"hold {self.ref} expires at {self.expires_at}", hold=self.ref)
        self.trigger_event(self.Expired, principal=str(principal))

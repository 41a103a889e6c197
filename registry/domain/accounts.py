"""Registry accounts: who holds which serial blocks, and what they may do with them.

An account's holding is split into *available* blocks and blocks *held* by exchange
holds (keyed by the hold's id). Only available blocks can be debited.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, CanMutateAggregate, datetime_now_with_tzinfo

from registry.domain import units
from registry.domain.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    AccountStateUnchanged,
    DifferentHolder,
    InsufficientUnits,
    InvalidCommand,
    NationalAccountProtected,
    RequestExistsWithDifferentContent,
)
from registry.domain.ids import NAMESPACE, has_control_characters
from registry.domain.units import Holding, SerialBlock, UnitSelector


class AccountType(StrEnum):
    ISSUANCE = "ISSUANCE"
    ALLOCATION_RESERVE = "ALLOCATION_RESERVE"
    SURRENDER = "SURRENDER"
    CANCELLATION = "CANCELLATION"
    COMPLIANCE = "COMPLIANCE"
    TRADING = "TRADING"
    PROJECT = "PROJECT"

    @property
    def is_national(self) -> bool:
        return self in NATIONAL_ACCOUNTS


_ACCOUNT_TYPES: dict[str, AccountType] = {t.value: t for t in AccountType}
"""By name, without ``AccountType(name)`` (a Python call per lookup)."""

NATIONAL_ACCOUNTS: dict[AccountType, str] = {
    AccountType.ISSUANCE: "CN-ISSUANCE",
    AccountType.ALLOCATION_RESERVE: "CN-ALLOCATION-RESERVE",
    AccountType.SURRENDER: "CN-SURRENDER",
    AccountType.CANCELLATION: "CN-CANCELLATION",
}
"""The four national accounts, one each per registry, held by the registry authority."""

REGISTRY_AUTHORITY = "National Carbon Emissions Registry"


class AccountState(StrEnum):
    OPEN = "OPEN"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class Sector(StrEnum):
    POWER = "POWER"
    STEEL = "STEEL"
    CEMENT = "CEMENT"
    ALUMINIUM = "ALUMINIUM"


ACCOUNT_ID = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,63}\Z")
CREDIT_CODE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{18}\Z")
CREDIT_CODE_LENGTH = 18
MAX_HOLDER_NAME = 200
MAX_PROVINCE = 64
"""As the read models store them (rm_accounts: VARCHAR(200), (18), (64))."""
"""China's unified social credit code: 18 characters, no I, O, Z, S or V."""


def parse_account_type(value: str) -> AccountType:
    try:
        return AccountType(value)
    except ValueError:
        raise InvalidCommand(
            f"unknown account type {value!r}", reason="UNKNOWN_ACCOUNT_TYPE"
        ) from None


def check_account_id(account_id: str) -> str:
    if not isinstance(account_id, str) or not ACCOUNT_ID.match(account_id):
        raise InvalidCommand(
            f"account id {account_id!r} must be 3-64 of A-Z, 0-9 and '-'",
            reason="INVALID_ACCOUNT_ID",
        )
    return account_id


@dataclass(frozen=True)
class Holder:
    """The account holder. Compliance holders need all fields; others need a name."""

    name: str
    credit_code: str = ""
    sector: str = ""
    province: str = ""

    def validate(self, account_type: AccountType) -> None:
        if (
            not self.name.strip()
            or len(self.name) > MAX_HOLDER_NAME
            or has_control_characters(self.name)
        ):
            raise InvalidCommand(
                f"holder name must be 1-{MAX_HOLDER_NAME} characters, without control characters",
                reason="INVALID_HOLDER",
            )
        if len(self.credit_code) > CREDIT_CODE_LENGTH or has_control_characters(self.credit_code):
            raise InvalidCommand(
                f"unified social credit code {self.credit_code!r} must be "
                f"{CREDIT_CODE_LENGTH} characters",
                reason="INVALID_CREDIT_CODE",
            )
        if len(self.province) > MAX_PROVINCE or has_control_characters(self.province):
            raise InvalidCommand(
                f"province must be at most {MAX_PROVINCE} characters, without control characters",
                reason="INVALID_PROVINCE",
            )
        if account_type is AccountType.COMPLIANCE:
            if not CREDIT_CODE.match(self.credit_code):
                raise InvalidCommand(
                    f"unified social credit code {self.credit_code!r} must be 18 characters",
                    reason="INVALID_CREDIT_CODE",
                )
            if self.sector not in Sector.__members__:
                raise InvalidCommand(
                    f"sector {self.sector!r} must be one of {', '.join(Sector)}",
                    reason="INVALID_SECTOR",
                )
            if not self.province.strip():
                raise InvalidCommand(
                    "a compliance account needs a province", reason="MISSING_PROVINCE"
                )
        elif self.sector and self.sector not in Sector.__members__:
            raise InvalidCommand(f"unknown sector {self.sector!r}", reason="INVALID_SECTOR")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Account(Aggregate):
    """One registry account. Guard methods raise; event classes change state."""

    TOPIC = "registry.Account"

    def __init__(self) -> None:
        # Primitive state only, so snapshots round-trip through JSON unchanged.
        self.account_id = ""
        self.type_name = AccountType.TRADING.value
        self.holder: dict[str, str] = {}
        self.state_name = AccountState.OPEN.value
        self.available: Holding = ()
        self.held: dict[str, Holding] = {}
        self.state_requests: dict[str, str] = {}
        """Client request id -> the state its freeze, unfreeze or close led to: a retry
        is answered, not refused as unchanged; an id reused for another change is
        refused. Replaced, never mutated, by the events (cached copies stay safe)."""

    def __deepcopy__(self, memo: dict[int, object]) -> Account:
        """What the aggregate cache hands out. Events replace attributes and never
        mutate them (holdings are tuples of frozen blocks; dicts are rebuilt), so a
        shallow copy is as independent as a deep one, and ~20x cheaper: a deep copy was
        a sixth of a single settlement's time. Lists (pending events) get their own."""
        clone = object.__new__(type(self))
        clone.__dict__.update(
            {
                key: list(value) if isinstance(value, list) else value
                for key, value in self.__dict__.items()
            }
        )
        return clone

    @property
    def account_type(self) -> AccountType:
        return _ACCOUNT_TYPES.get(self.type_name) or AccountType(self.type_name)

    @property
    def state(self) -> AccountState:
        return AccountState(self.state_name)

    @staticmethod
    @lru_cache(maxsize=65_536)
    def id_for(account_id: str) -> UUID:
        """Cached: a national registry has a few thousand accounts, each looked up
        several times per command, and uuid5 hashes every time."""
        return uuid5(NAMESPACE, f"account:{account_id}")

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.Account.Created"

    class Opened(Aggregate.Created):
        TOPIC = "registry.Account.Opened"
        account_id: str
        account_type: str
        holder: dict[str, str]
        principal: str

        def apply(self, account: Account) -> None:
            account.account_id = self.account_id
            account.type_name = self.account_type
            account.holder = dict(self.holder)

    class Frozen(Aggregate.Event):
        TOPIC = "registry.Account.Frozen"
        reason: str
        principal: str
        request_id: str = ""

        def apply(self, account: Account) -> None:
            account.state_name = AccountState.FROZEN.value
            account._remember(self.request_id)

    class Unfrozen(Aggregate.Event):
        TOPIC = "registry.Account.Unfrozen"
        reason: str
        principal: str
        request_id: str = ""

        def apply(self, account: Account) -> None:
            account.state_name = AccountState.OPEN.value
            account._remember(self.request_id)

    class Closed(Aggregate.Event):
        TOPIC = "registry.Account.Closed"
        reason: str
        principal: str
        request_id: str = ""

        def apply(self, account: Account) -> None:
            account.state_name = AccountState.CLOSED.value
            account._remember(self.request_id)

    class Debited(Aggregate.Event):
        TOPIC = "registry.Account.Debited"
        transaction_id: UUID
        blocks: list[SerialBlock]

        def apply(self, account: Account) -> None:
            account.available = units.remove(account.available, self.blocks)

    class Credited(Aggregate.Event):
        TOPIC = "registry.Account.Credited"
        transaction_id: UUID
        blocks: list[SerialBlock]

        def apply(self, account: Account) -> None:
            account.available = units.add(account.available, self.blocks)

    class MovementsPosted(Aggregate.Event):
        """Several debits and credits of one save, in order: one event per account per
        batch instead of one per movement (a batch of 1,000 trades over 200 accounts
        writes 200 account events, not 2,000). Each entry is ``{"transaction_id": id,
        "debited": blocks}`` or ``{"transaction_id": id, "credited": blocks}``."""

        TOPIC = "registry.Account.MovementsPosted"
        movements: list[dict[str, Any]]

        def apply(self, account: Account) -> None:
            available = account.available  # updated persistently, not copied
            for movement in self.movements:
                debited = movement.get("debited")
                if debited is not None:
                    available = units.remove(available, debited)
                else:
                    available = units.add(available, movement["credited"])
            account.available = available

    class UnitsHeld(Aggregate.Event):
        TOPIC = "registry.Account.UnitsHeld"
        hold_id: UUID
        blocks: list[SerialBlock]

        def apply(self, account: Account) -> None:
            account.available = units.remove(account.available, self.blocks)
            account.held = {**account.held, str(self.hold_id): tuple(self.blocks)}

    class HoldReleased(Aggregate.Event):
        TOPIC = "registry.Account.HoldReleased"
        hold_id: UUID
        blocks: list[SerialBlock]

        def apply(self, account: Account) -> None:
            held = dict(account.held)
            held.pop(str(self.hold_id))
            account.held = held
            account.available = units.add(account.available, self.blocks)

    class HeldUnitsDebited(Aggregate.Event):
        """A hold settled: ``blocks`` left the account, ``released`` became available."""

        TOPIC = "registry.Account.HeldUnitsDebited"
        hold_id: UUID
        transaction_id: UUID
        blocks: list[SerialBlock]
        released: list[SerialBlock]

        def apply(self, account: Account) -> None:
            held = dict(account.held)
            held.pop(str(self.hold_id))
            account.held = held
            account.available = units.add(account.available, self.released)

    def collect_events(self) -> Sequence[CanMutateAggregate[UUID]]:
        """The pending events, each run of debits and credits ``_post`` gathered made
        one event (``Debited`` or ``Credited`` when it is one movement, else
        ``MovementsPosted``); a run of two or more debit and credit events posted as
        one ``MovementsPosted`` at the first one's version (the state they made is the
        same: it applies them in order). Anything else is left as it is."""
        events: list[Any] = list(super().collect_events())
        if any(type(e) is _Postings for e in events):
            return self._collect_postings(events)
        moves = [e for e in events if isinstance(e, Account.Debited | Account.Credited)]
        if len(events) < 2 or len(moves) != len(events):
            return events
        first = events[0].originator_version
        self.version = first
        posted: Any = self.MovementsPosted  # its fields are made at run time
        return [
            posted(
                originator_id=self.id,
                originator_version=first,
                timestamp=events[-1].timestamp,
                movements=[
                    {
                        "transaction_id": e.transaction_id,
                        "debited" if isinstance(e, Account.Debited) else "credited": e.blocks,
                    }
                    for e in moves
                ],
            )
        ]

    def _collect_postings(self, events: list[Any]) -> list[CanMutateAggregate[UUID]]:
        """Each ``_Postings`` run as one ``MovementsPosted``, the events after it
        renumbered to follow on without gaps (a hold settled between two runs)."""
        collected: list[CanMutateAggregate[UUID]] = []
        version = events[0].originator_version
        for event in events:
            if type(event) is _Postings:
                event.originator_version = version
                collected.append(event.event(self))
            elif event.originator_version != version:
                moved = dataclasses.replace(event, originator_version=version)
                for name, value in event.__dict__.items():  # a stamp (api_request_id)
                    moved.__dict__.setdefault(name, value)
                collected.append(moved)
            else:
                collected.append(event)
            version += 1
        self.version = version - 1
        return collected

    # -- creation -----------------------------------------------------------------

    @classmethod
    def open(
        cls, account_id: str, account_type: AccountType, holder: Holder, principal: str
    ) -> Account:
        check_account_id(account_id)
        holder.validate(account_type)
        if account_type.is_national and NATIONAL_ACCOUNTS[account_type] != account_id:
            raise InvalidCommand(
                f"{account_type} is a national account; its id is "
                f"{NATIONAL_ACCOUNTS[account_type]}",
                reason="NATIONAL_ACCOUNT_ID",
                field="account_id",
            )
        return cls._create(
            cls.Opened,
            id=cls.id_for(account_id),
            account_id=account_id,
            account_type=account_type.value,
            holder=holder.as_dict(),
            principal=principal,
        )

    # -- queries ------------------------------------------------------------------

    @property
    def held_blocks(self) -> Holding:
        return tuple(b for blocks in self.held.values() for b in blocks)

    @property
    def all_blocks(self) -> Holding:
        return units.merge([*self.available, *self.held_blocks])

    def is_empty(self) -> bool:
        return not self.available and not self.held

    def is_replay(self, request_id: str, state: AccountState) -> bool:
        """True when ``request_id`` already made this change (a retry); an id that made
        another change is refused."""
        made = self._state_requests().get(request_id) if request_id else None
        if made is None:
            return False
        if made != state.value:
            raise RequestExistsWithDifferentContent(
                f"request id {request_id} was used to make account {self.account_id} {made}",
                account=self.account_id,
                request=request_id,
            )
        return True

    def _remember(self, request_id: str) -> None:
        if request_id:
            self.state_requests = {**self._state_requests(), request_id: self.state_name}

    def _state_requests(self) -> dict[str, str]:
        """A snapshot taken before request ids existed restores without the attribute
        (a class default cannot stand in: the library makes annotated class attributes
        dataclass fields of the aggregate, and refuses a dict default)."""
        requests: dict[str, str] = self.__dict__.get("state_requests", {})
        return requests

    # -- guards -------------------------------------------------------------------

    def ensure_can_send(self) -> None:
        if self.state_name == "OPEN":  # the common case, without building the enum
            return
        if self.state is AccountState.FROZEN:
            raise AccountFrozen(f"account {self.account_id} is frozen", account=self.account_id)
        if self.state is AccountState.CLOSED:
            raise AccountClosed(f"account {self.account_id} is closed", account=self.account_id)

    def ensure_can_receive(self) -> None:
        if self.state_name == AccountState.CLOSED.value:
            raise AccountClosed(f"account {self.account_id} is closed", account=self.account_id)

    @property
    def holder_identity(self) -> str:
        """Who holds the account, as the registry can tell: the unified social credit
        code recorded when it was opened (a legal person's one national identifier; a
        name is not unique). "" when none was recorded."""
        return self.holder.get("credit_code", "")

    def ensure_same_holder(self, other: Account) -> None:
        """Refuse unless both accounts record the same holder identity: a holder
        transfer moves units between one holder's own accounts, never to another's."""
        mine, theirs = self.holder_identity, other.holder_identity
        if mine and mine == theirs:
            return
        why = (
            "holders differ"
            if mine and theirs
            else "the holder identity (unified social credit code) is not recorded on "
            + " and ".join(a.account_id for a in (self, other) if not a.holder_identity)
        )
        raise DifferentHolder(
            f"accounts {self.account_id} and {other.account_id} are not one holder's: {why}",
            source=self.account_id,
            destination=other.account_id,
            source_holder=mine,
            destination_holder=theirs,
        )

    # -- commands -----------------------------------------------------------------

    def freeze(self, reason: str, principal: str, request_id: str = "") -> None:
        if self.account_type.is_national:
            raise NationalAccountProtected(
                f"national account {self.account_id} cannot be frozen", account=self.account_id
            )
        self.ensure_can_receive()
        if self.state is AccountState.FROZEN:
            raise AccountStateUnchanged(
                f"account {self.account_id} is already frozen", account=self.account_id
            )
        self.trigger_event(self.Frozen, reason=reason, principal=principal, request_id=request_id)

    def unfreeze(self, reason: str, principal: str, request_id: str = "") -> None:
        self.ensure_can_receive()
        if self.state is not AccountState.FROZEN:
            raise AccountStateUnchanged(
                f"account {self.account_id} is not frozen", account=self.account_id
            )
        self.trigger_event(self.Unfrozen, reason=reason, principal=principal, request_id=request_id)

    def close(self, reason: str, principal: str, request_id: str = "") -> None:
        if self.account_type.is_national:
            raise NationalAccountProtected(
                f"national account {self.account_id} cannot be closed", account=self.account_id
            )
        self.ensure_can_receive()
        if not self.is_empty():
            raise AccountNotEmpty(
                f"account {self.account_id} still holds {units.total(self.all_blocks)} units",
                account=self.account_id,
            )
        self.trigger_event(self.Closed, reason=reason, principal=principal, request_id=request_id)

    def debit(
        self,
        transaction_id: UUID,
        selector: UnitSelector,
        quantity: int,
        pool: Holding | None = None,
    ) -> Holding:
        """Take the oldest, lowest-serial available units matching ``selector`` (from
        ``pool``, a part of the available units, when restrictions leave only that)."""
        self.ensure_can_send()
        taken, rest = self._take(selector, quantity, pool)
        available = rest if pool is None else units.remove(self.available, taken)
        self._post(transaction_id, "debited", list(taken), available)
        return taken

    def debit_blocks(self, transaction_id: UUID, blocks: Iterable[SerialBlock]) -> Holding:
        """Take exactly these serial blocks (a reversal puts back what it undoes)."""
        self.ensure_can_send()
        blocks = tuple(blocks)
        available = units.remove(self.available, blocks)  # UnitsNotHeld if one is missing
        self._post(transaction_id, "debited", list(blocks), available)
        return blocks

    def credit(self, transaction_id: UUID, blocks: Iterable[SerialBlock]) -> None:
        self.ensure_can_receive()
        blocks = list(blocks)
        self._post(transaction_id, "credited", blocks, units.add(self.available, blocks))

    def _post(
        self, transaction_id: UUID, key: str, blocks: list[SerialBlock], available: Holding
    ) -> None:
        """A debit or a credit: the event ``trigger_event`` would make (one version
        each), its change to the holding already worked out (``available``, after it).
        Debits and credits made one after another are kept pending as one ``_Postings``
        run instead of an event object each: a batch of 1,000 trades made 2,000 event
        objects only to merge them into one event per account (``collect_events``).
        ``pending_events`` still shows them one by one."""
        pending: list[Any] = self._pending_events
        last = pending[-1] if pending else None
        kind = type(last)
        version = self._version + 1
        if last is not None and kind is _Postings:
            last.movements.append({"transaction_id": transaction_id, key: blocks})
        elif kind is Account.Debited or kind is Account.Credited:
            postings = _Postings(last)  # the second in a row: gather them from now on
            postings.movements.append({"transaction_id": transaction_id, key: blocks})
            pending[-1] = postings
        else:  # the first: its own event
            event: Any = Account.Debited if key == "debited" else Account.Credited
            timestamp = datetime_now_with_tzinfo()
            pending.append(
                event(
                    originator_id=self.id,
                    originator_version=version,
                    timestamp=timestamp,
                    transaction_id=transaction_id,
                    blocks=blocks,
                )
            )
            self._modified_on = timestamp
        self._version = version
        self.available = available

    @property
    def pending_events(self) -> list[CanMutateAggregate[UUID]]:
        """The pending events, a run ``_post`` gathered shown as the ``Debited`` and
        ``Credited`` events it stands for (a copy then: add events with ``trigger_event``).
        """
        pending: list[Any] = self._pending_events
        if not any(type(e) is _Postings for e in pending):
            return pending
        return [
            single for e in pending for single in (e.singles(self) if type(e) is _Postings else [e])
        ]

    def hold(
        self, hold_id: UUID, selector: UnitSelector, quantity: int, pool: Holding | None = None
    ) -> Holding:
        self.ensure_can_send()
        taken, _ = self._take(selector, quantity, pool)
        self.trigger_event(self.UnitsHeld, hold_id=hold_id, blocks=list(taken))
        return taken

    def release_hold(self, hold_id: UUID) -> Holding:
        blocks = tuple(self.held[str(hold_id)])  # a snapshot restores lists
        self.trigger_event(self.HoldReleased, hold_id=hold_id, blocks=list(blocks))
        return blocks

    def debit_hold(self, hold_id: UUID, transaction_id: UUID, quantity: int) -> Holding:
        """Settle a hold: the lowest ``quantity`` held serials leave, the rest are freed."""
        self.ensure_can_send()
        held = tuple(self.held[str(hold_id)])
        taken, released = units.take(held, _any_of(held), quantity)
        self.trigger_event(
            self.HeldUnitsDebited,
            hold_id=hold_id,
            transaction_id=transaction_id,
            blocks=list(taken),
            released=list(released),
        )
        return taken

    def would_debit(
        self, selector: UnitSelector, quantity: int, pool: Holding | None = None
    ) -> Holding:
        """The blocks ``debit`` would take, without taking them: for guards that judge
        what moves (a surrender's vintages) before anything changes."""
        self.ensure_can_send()
        taken, _ = self._take(selector, quantity, pool)
        return taken

    def _take(
        self, selector: UnitSelector, quantity: int, pool: Holding | None = None
    ) -> tuple[Holding, Holding]:
        try:
            return units.take(self.available if pool is None else pool, selector, quantity)
        except InsufficientUnits as error:
            error.metadata["account"] = self.account_id
            error.metadata["held"] = str(units.total(self.held_blocks, selector))
            raise


class _Postings:
    """A run of debits and credits of one account, pending: from the version of its
    first movement on, one version each. Saved as one ``MovementsPosted`` at the first
    one's version (``Account.collect_events``), as a run of their events always was.
    Never stored itself."""

    __slots__ = ("__dict__", "movements", "originator_version")

    def __init__(self, first: Any) -> None:
        """Gather from ``first``, a pending ``Debited`` or ``Credited``, on."""
        self.originator_version: int = first.originator_version
        self.movements: list[dict[str, Any]] = [
            {
                "transaction_id": first.transaction_id,
                "debited" if type(first) is Account.Debited else "credited": first.blocks,
            }
        ]

    def singles(self, account: Account) -> list[CanMutateAggregate[UUID]]:
        """The ``Debited`` and ``Credited`` events the run stands for."""
        debited: Any = Account.Debited
        credited: Any = Account.Credited
        timestamp = account.modified_on
        return [
            (debited if "debited" in m else credited)(
                originator_id=account.id,
                originator_version=self.originator_version + n,
                timestamp=timestamp,
                transaction_id=m["transaction_id"],
                blocks=m["debited"] if "debited" in m else m["credited"],
            )
            for n, m in enumerate(self.movements)
        ]

    def event(self, account: Account) -> CanMutateAggregate[UUID]:
        """The ``MovementsPosted`` to store, at the version the first movement took."""
        timestamp = datetime_now_with_tzinfo()
        account.modified_on = timestamp
        posted: Any = Account.MovementsPosted
        merged: CanMutateAggregate[UUID] = posted(
            originator_id=account.id,
            originator_version=self.originator_version,
            timestamp=timestamp,
            movements=self.movements,
        )
        return merged


def _any_of(blocks: Holding) -> UnitSelector:
    """A selector matching every block of a hold (holds have one unit type)."""
    return UnitSelector(blocks[0].unit_class.unit_type)

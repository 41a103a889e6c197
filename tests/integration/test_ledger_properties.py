"""The Registry against an independent reference model, as a Hypothesis state machine.

``LedgerMachine`` sends random sequences of every registry command to a real Registry:
opening, freezing, unfreezing and closing accounts; issuance, allocation, allocation
returns, transfers, single trades and trade batches (repeated ids, malformed trades),
surrenders, cancellations and reversals; exchange holds (placed, released, expired after
the clock moves, settled against); and retries of all of them, with the same and with
different content.

``Model`` predicts every answer from the rules alone. It keeps plain sets of
``(unit class, serial)`` per account and per hold; it uses none of the registry's unit
helpers or aggregates. After every step the invariants compare each account's state
and holdings, every hold and every compliance obligation with the model, and check
conservation and the serial partition from the registry's own answers.

The same machine runs on the in-memory store, on SQLite and on PostgreSQL.

``OriginMachine`` plays the offset side on a smaller world (in memory and on
PostgreSQL): CCER projects suspended and reinstated, a holder's transfers between its own
accounts (and refused to another holder's), court freezes, origin detentions, holders'
rebuttals, a holder cleared, a whole detention lifted, and confirmations. Its invariant
beyond the model's: a detained serial never changes account except by a ``FORFEITURE``
to CN-CANCELLATION, and once confirmed no uncleared unit of the origin is held anywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql

from registry.application import (
    AccountResult,
    EmissionsRow,
    HoldingView,
    HoldResult,
    Registry,
    Trade,
    TradeResult,
    TransactionResult,
)
from registry.application.projects import StatusChange
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.errors import (
    AccountClosed,
    AccountExistsWithDifferentContent,
    AccountNotEmpty,
    AccountStateUnchanged,
    HoldExistsWithDifferentContent,
    HoldNotActive,
    HoldNotExpired,
    InvalidCommand,
    NationalAccountProtected,
    RegistryError,
    TransactionExistsWithDifferentContent,
    UnknownAccount,
    UnknownHold,
    UnknownTransaction,
)
from registry.domain.origin_detentions import OriginDetention
from registry.domain.transactions import Principal
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from tests.support import (
    EXCHANGE,
    REGULATOR,
    FakeClock,
    assert_conserved,
    fresh_pg_database,
    register_project,
)

T = TypeVar("T")
V = TypeVar("V")

# == the world the machine plays in ==============================================

UC = tuple[str, int, str]
"""A unit class: (unit type, vintage, project or "")."""
Serial = tuple[UC, int]
Block = tuple[UC, int, int]
"""A serial block: (unit class, first, last)."""
Sel = tuple[str, int | None, str | None]
"""A unit selector: (unit type, vintage or None, project or None)."""

ISSUANCE = "CN-ISSUANCE"
RESERVE = "CN-ALLOCATION-RESERVE"
SURRENDER = "CN-SURRENDER"
CANCELLATION = "CN-CANCELLATION"
NATIONAL = {
    ISSUANCE: "ISSUANCE",
    RESERVE: "ALLOCATION_RESERVE",
    SURRENDER: "SURRENDER",
    CANCELLATION: "CANCELLATION",
}
POOL = {
    "CMP-1": "COMPLIANCE",
    "CMP-2": "COMPLIANCE",
    "TRD-1": "TRADING",
    "TRD-2": "TRADING",
    "PRJ-1": "PROJECT",
}
"""Accounts the machine may open (the type follows from the id)."""
PROJECT_OWNER = "PRJ-1"
"""Opened at the start, owner of every project of ``UNIT_CLASSES`` (registered then):
where their issuance lands."""
GHOST = "GHOST-1"
"""Never opened."""
ALL_ACCOUNTS = [*NATIONAL, *POOL, GHOST]
AUTHORITY = "National Carbon Emissions Registry"

HOLDERS = frozenset({"COMPLIANCE", "TRADING", "PROJECT"})
RETIREMENT = frozenset({"SURRENDER", "CANCELLATION"})
MOVES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ALLOCATION": (frozenset({"ISSUANCE", "ALLOCATION_RESERVE"}), frozenset({"COMPLIANCE"})),
    "ALLOCATION_RETURN": (frozenset({"COMPLIANCE"}), frozenset({"ALLOCATION_RESERVE"})),
    "TRANSFER": (HOLDERS | {"ISSUANCE", "ALLOCATION_RESERVE"}, HOLDERS | {"ALLOCATION_RESERVE"}),
    "SETTLEMENT": (HOLDERS, HOLDERS),
    "SURRENDER": (frozenset({"COMPLIANCE"}), frozenset({"SURRENDER"})),
    "CANCELLATION": (HOLDERS | {"ISSUANCE", "ALLOCATION_RESERVE"}, frozenset({"CANCELLATION"})),
}
"""Which account types each kind may take units from and deliver them to."""

UNIT_CLASSES: list[UC] = [
    ("CEA", 2024, ""),
    ("CEA", 2025, ""),
    ("CCER", 2023, "P-A"),
    ("CCER", 2024, "P-A"),
    ("CCER", 2024, "P-B"),
]
SELECTORS: list[Sel] = [
    ("CEA", None, None),
    ("CEA", 2024, None),
    ("CEA", 2025, None),
    ("CEA", 2023, None),
    ("CCER", None, None),
    ("CCER", 2024, None),
    ("CCER", None, "P-A"),
    ("CCER", 2024, "P-B"),
]
TRADE_UNITS: list[tuple[str, int | None]] = [
    ("CEA", None),
    ("CEA", 2024),
    ("CEA", 2025),
    ("CCER", None),
    ("CCER", 2024),
]
TIMEOUTS = [60, 900, 3600]
KINDS = [
    "ISSUANCE",
    "ALLOCATION",
    "ALLOCATION_RETURN",
    "TRANSFER",
    "SETTLEMENT",
    "SURRENDER",
    "CANCELLATION",
    "REVERSAL",
]
PRINCIPALS = {REGULATOR.party: REGULATOR, EXCHANGE.party: EXCHANGE}
TRADE_REASON = "exchange trade"

NOT_POSITIVE = "QUANTITY_NOT_POSITIVE"
SAME_ACCOUNT = "SAME_ACCOUNT"
TEWDC = "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"


# == commands ====================================================================


@dataclass(frozen=True)
class Move:
    """One movement command, with exactly the content the registry fingerprints."""

    party: str
    txn_id: str
    kind: str
    source: str | None
    destination: str | None
    quantity: int | None
    selector: Sel | None = None
    unit_class: UC | None = None
    hold_id: str | None = None
    year: int | None = None
    reverses: tuple[str, str] | None = None
    reason: str = ""

    def content(self) -> tuple[object, ...]:
        return (
            self.kind,
            self.source,
            self.destination,
            self.quantity,
            self.selector,
            self.unit_class,
            self.hold_id,
            self.year,
            self.reverses,
            self.reason,
        )

    def altered(self) -> Move:
        """The same id with different content."""
        if self.quantity is not None:
            return replace(self, quantity=self.quantity + 1)
        return replace(self, reason=self.reason + " (amended)")


@dataclass(frozen=True)
class HoldCmd:
    hold_id: str
    account: str
    selector: Sel
    quantity: int
    timeout: int

    def content(self) -> tuple[object, ...]:
        return (self.account, self.selector, self.quantity, self.timeout)


def unit_class(uc: UC) -> UnitClass:
    return UnitClass(UnitType(uc[0]), uc[1], uc[2])


def unit_selector(sel: Sel) -> UnitSelector:
    return UnitSelector(UnitType(sel[0]), sel[1], sel[2])


def trade_of(move: Move) -> Trade:
    assert move.source and move.destination and move.selector and move.quantity is not None
    return Trade(
        move.txn_id,
        move.source,
        move.destination,
        move.selector[0],
        move.quantity,
        move.selector[1],
        move.hold_id,
    )


def holder_for(account_id: str, name: str) -> Holder:
    if POOL[account_id] == "COMPLIANCE":
        return Holder(name, "91110000100001234X", "POWER", "Beijing")
    return Holder(name)


def send(registry: Registry, move: Move) -> TransactionResult:
    """Call the registry method for ``move``."""
    principal = PRINCIPALS[move.party]
    if move.kind == "REVERSAL":
        assert move.reverses is not None
        return registry.reverse(principal, move.txn_id, *move.reverses, move.reason)
    assert move.quantity is not None
    if move.kind == "ISSUANCE":
        assert move.unit_class is not None
        return registry.issue_units(
            principal, move.txn_id, unit_class(move.unit_class), move.quantity, move.reason
        )
    if move.kind == "SETTLEMENT":
        return registry.settle_trade(principal, trade_of(move))
    assert move.source and move.destination and move.selector
    selector = unit_selector(move.selector)
    if move.kind == "ALLOCATION":
        return registry.allocate(
            principal,
            move.txn_id,
            move.destination,
            selector,
            move.quantity,
            move.reason,
            source=move.source,
        )
    if move.kind == "ALLOCATION_RETURN":
        return registry.return_allocation(
            principal, move.txn_id, move.source, selector, move.quantity, move.reason
        )
    if move.kind == "TRANSFER":
        return registry.transfer(
            principal,
            move.txn_id,
            move.source,
            move.destination,
            selector,
            move.quantity,
            move.reason,
        )
    if move.kind == "SURRENDER":
        assert move.year is not None
        return registry.surrender(
            principal, move.txn_id, move.source, selector, move.quantity, move.year, move.reason
        )
    if move.kind == "CANCELLATION":
        return registry.cancel(
            principal, move.txn_id, move.source, selector, move.quantity, move.reason
        )
    raise AssertionError(f"unknown kind {move.kind}")


# == what is compared =============================================================


@dataclass(frozen=True)
class Raised:
    error: type[RegistryError]
    reason: str


@dataclass(frozen=True)
class AccountSeen:
    account_id: str
    account_type: str
    state: str
    replayed: bool


@dataclass(frozen=True)
class TxnSeen:
    status: str
    refusal_reason: str
    source: str | None
    destination: str | None
    blocks: tuple[Block, ...]
    replayed: bool
    reversed: bool


@dataclass(frozen=True)
class TradeSeen:
    trade_id: str
    outcome: str
    reason: str
    transaction: TxnSeen | None


@dataclass(frozen=True)
class HoldSeen:
    status: str
    refusal_reason: str
    account_id: str
    quantity: int
    blocks: tuple[Block, ...]
    expires_at: datetime | None
    settled_quantity: int
    replayed: bool


@dataclass(frozen=True)
class HoldingSeen:
    unit_class: UC
    total: int
    held: int
    available: int
    blocks: tuple[Block, ...]


def block_of(block: SerialBlock) -> Block:
    uc = block.unit_class
    return ((uc.unit_type.value, uc.vintage, uc.project), block.first, block.last)


def seen_account(result: AccountResult) -> AccountSeen:
    view = result.account
    return AccountSeen(view.account_id, view.account_type.value, view.state.value, result.replayed)


def seen_txn(result: TransactionResult) -> TxnSeen:
    return TxnSeen(
        result.status.value,
        result.refusal_reason,
        result.source,
        result.destination,
        tuple(block_of(b) for b in result.blocks),
        result.replayed,
        result.reversed,
    )


def seen_trade(result: TradeResult) -> TradeSeen:
    txn = seen_txn(result.transaction) if result.transaction is not None else None
    return TradeSeen(result.trade_id, result.outcome.value, result.reason, txn)


def seen_hold(result: HoldResult) -> HoldSeen:
    return HoldSeen(
        result.status.value,
        result.refusal_reason,
        result.account_id,
        result.quantity,
        tuple(block_of(b) for b in result.blocks),
        result.expires_at,
        result.settled_quantity,
        result.replayed,
    )


def seen_holding(view: HoldingView) -> HoldingSeen:
    uc = view.unit_class
    return HoldingSeen(
        (uc.unit_type.value, uc.vintage, uc.project),
        view.total,
        view.held,
        view.available,
        tuple(block_of(b) for b in view.blocks),
    )


def get_hold(registry: Registry, key: tuple[str, str]) -> Callable[[], HoldResult]:
    return lambda: registry.get_hold(*key)


def attempt(call: Callable[[], T], view: Callable[[T], V]) -> V | Raised:
    """The result of ``call`` as ``view`` shows it, or the registry error it raised."""
    try:
        result = call()
    except RegistryError as error:
        return Raised(type(error), error.reason)
    return view(result)


# == the reference model ==========================================================


def runs(serials: Iterable[Serial]) -> tuple[Block, ...]:
    """Serials as maximal contiguous blocks, sorted by unit class then serial."""
    blocks: list[Block] = []
    for uc, serial in sorted(serials):
        if blocks and blocks[-1][0] == uc and blocks[-1][2] + 1 == serial:
            blocks[-1] = (uc, blocks[-1][1], serial)
        else:
            blocks.append((uc, serial, serial))
    return tuple(blocks)


def serials_of(blocks: Iterable[Block]) -> set[Serial]:
    return {(uc, n) for uc, first, last in blocks for n in range(first, last + 1)}


def matches(sel: Sel, uc: UC) -> bool:
    unit_type, vintage, project = sel
    return uc[0] == unit_type and vintage in (None, uc[1]) and (not project or uc[2] == project)


def malformed(move: Move) -> str | None:
    """The reason the registry rejects ``move`` before recording anything, if any."""
    if move.quantity is not None and move.quantity <= 0:
        return NOT_POSITIVE
    if move.kind not in ("ISSUANCE", "REVERSAL") and move.source == move.destination:
        return SAME_ACCOUNT
    return None


class Refusal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AccountModel:
    account_id: str
    type: str
    holder_name: str
    state: str = "OPEN"
    available: set[Serial] = field(default_factory=set)
    holds: dict[tuple[str, str], set[Serial]] = field(default_factory=dict)

    def held(self) -> set[Serial]:
        return {s for serials in self.holds.values() for s in serials}

    def check_send(self) -> None:
        if self.state == "FROZEN":
            raise Refusal("ACCOUNT_FROZEN")
        if self.state == "CLOSED":
            raise Refusal("ACCOUNT_CLOSED")

    def check_receive(self) -> None:
        if self.state == "CLOSED":
            raise Refusal("ACCOUNT_CLOSED")


@dataclass
class TxnRecord:
    move: Move
    status: str
    refusal_reason: str
    source: str | None
    destination: str | None
    blocks: tuple[Block, ...]
    reversed: bool = False
    deducted: int = 0
    """An allocation: units of it that paid a debt carried into its year (not moved)."""
    carried: int = 0
    """A true-up return: units it could not cover, carried into the next year as debt."""

    def seen(self, *, replayed: bool) -> TxnSeen:
        return TxnSeen(
            self.status,
            self.refusal_reason,
            self.source,
            self.destination,
            self.blocks,
            replayed,
            self.reversed,
        )


@dataclass
class HoldRecord:
    cmd: HoldCmd
    status: str
    refusal_reason: str
    expires_at: datetime | None
    settled_quantity: int = 0


def trade_seen(trade_id: str, txn: TxnSeen) -> TradeSeen:
    if txn.status == "COMPLETED":
        return TradeSeen(trade_id, "ALREADY_SETTLED" if txn.replayed else "SETTLED", "", txn)
    return TradeSeen(trade_id, "REFUSED", txn.refusal_reason, txn)


class Model:
    """What the registry should answer, and what every account should then hold."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.accounts = {
            account_id: AccountModel(account_id, account_type, AUTHORITY)
            for account_id, account_type in NATIONAL.items()
        }
        self.issued: dict[UC, int] = {}
        self.txns: dict[tuple[str, str], TxnRecord] = {}
        self.holds: dict[tuple[str, str], HoldRecord] = {}
        self.surrendered: dict[tuple[str, int], dict[str, int]] = {}
        self.debt: dict[tuple[str, int], int] = {}
        """(account, year) -> debt carried into that year by short returns, not yet
        deducted from an allocation of that year's vintage."""
        self._debt_change = (0, 0)

    # -- accounts ---------------------------------------------------------------

    def open_account(self, account_id: str, account_type: str, name: str) -> AccountSeen | Raised:
        existing = self.accounts.get(account_id)
        if existing is None:
            self.accounts[account_id] = AccountModel(account_id, account_type, name)
            return AccountSeen(account_id, account_type, "OPEN", False)
        if existing.type != account_type or existing.holder_name != name:
            return Raised(
                AccountExistsWithDifferentContent, "ACCOUNT_EXISTS_WITH_DIFFERENT_CONTENT"
            )
        return AccountSeen(account_id, existing.type, existing.state, True)

    def change_state(self, action: str, account_id: str) -> AccountSeen | Raised:
        account = self.accounts.get(account_id)
        if account is None:
            return Raised(UnknownAccount, "UNKNOWN_ACCOUNT")
        if action in ("close", "freeze") and account_id in NATIONAL:
            return Raised(NationalAccountProtected, "NATIONAL_ACCOUNT_PROTECTED")
        if account.state == "CLOSED":
            return Raised(AccountClosed, "ACCOUNT_CLOSED")
        if action == "freeze":
            if account.state == "FROZEN":
                return Raised(AccountStateUnchanged, "ACCOUNT_STATE_UNCHANGED")
            account.state = "FROZEN"
        elif action == "unfreeze":
            if account.state != "FROZEN":
                return Raised(AccountStateUnchanged, "ACCOUNT_STATE_UNCHANGED")
            account.state = "OPEN"
        else:
            if account.available or account.holds:
                return Raised(AccountNotEmpty, "ACCOUNT_NOT_EMPTY")
            account.state = "CLOSED"
        return AccountSeen(account_id, account.type, account.state, False)

    def account_view(self, account_id: str) -> tuple[str, str] | None:
        account = self.accounts.get(account_id)
        return None if account is None else (account.type, account.state)

    def holdings(self, account_id: str) -> tuple[HoldingSeen, ...] | None:
        account = self.accounts.get(account_id)
        if account is None:
            return None
        held = account.held()
        everything = account.available | held
        views = []
        for uc in sorted({uc for uc, _ in everything}):
            n_held = sum(1 for s in held if s[0] == uc)
            n_available = sum(1 for s in account.available if s[0] == uc)
            views.append(
                HoldingSeen(
                    uc,
                    n_held + n_available,
                    n_held,
                    n_available,
                    runs(s for s in everything if s[0] == uc),
                )
            )
        return tuple(views)

    # -- movements ------------------------------------------------------------------

    def move(self, move: Move) -> TxnSeen | Raised:
        invalid = malformed(move)
        if invalid is not None:
            return Raised(InvalidCommand, invalid)
        recorded = self.txns.get((move.party, move.txn_id))
        if recorded is not None:
            if recorded.move.content() != move.content():
                return Raised(TransactionExistsWithDifferentContent, TEWDC)
            return recorded.seen(replayed=True)
        record = self._record(move)
        return record.seen(replayed=False)

    def settle_batch(self, moves: list[Move]) -> list[TradeSeen]:
        results: list[TradeSeen] = []
        first: dict[str, tuple[Move, TradeSeen]] = {}
        for move in moves:
            invalid = malformed(move)
            if invalid is not None:
                results.append(TradeSeen(move.txn_id, "REJECTED", invalid, None))
                continue
            if move.txn_id in first:
                first_move, first_result = first[move.txn_id]
                if first_move.content() != move.content():
                    result = TradeSeen(move.txn_id, "REJECTED", TEWDC, None)
                elif first_result.transaction is None:
                    result = first_result
                else:
                    result = trade_seen(
                        move.txn_id, replace(first_result.transaction, replayed=True)
                    )
                results.append(result)
                continue
            recorded = self.txns.get((move.party, move.txn_id))
            if recorded is None:
                result = trade_seen(move.txn_id, self._record(move).seen(replayed=False))
            elif recorded.move.content() != move.content():
                result = TradeSeen(move.txn_id, "REJECTED", TEWDC, None)
            else:
                result = trade_seen(move.txn_id, recorded.seen(replayed=True))
            first[move.txn_id] = (move, result)
            results.append(result)
        return results

    def recorded(self, party: str, txn_id: str) -> TxnSeen | Raised:
        record = self.txns.get((party, txn_id))
        if record is None:
            return Raised(UnknownTransaction, "UNKNOWN_TRANSACTION")
        return record.seen(replayed=False)

    def _record(self, move: Move) -> TxnRecord:
        try:
            source, destination, blocks = self._perform(move)
        except Refusal as refusal:
            record = TxnRecord(move, "REFUSED", refusal.reason, move.source, move.destination, ())
        else:
            deducted, carried = self._debt_change
            record = TxnRecord(
                move, "COMPLETED", "", source, destination, blocks, False, deducted, carried
            )
        self._debt_change = (0, 0)
        self.txns[(move.party, move.txn_id)] = record
        return record

    def _account(self, account_id: str) -> AccountModel:
        account = self.accounts.get(account_id)
        if account is None:
            raise Refusal("UNKNOWN_ACCOUNT")
        return account

    def _perform(self, move: Move) -> tuple[str | None, str, tuple[Block, ...]]:
        """Check every guard in the registry's order, then change the model."""
        if move.kind == "ISSUANCE":
            return self._issue(move)
        if move.kind == "REVERSAL":
            return self._reverse(move)
        assert move.source and move.destination and move.selector and move.quantity
        source = self._account(move.source)
        destination = self._account(move.destination)
        if source.type in RETIREMENT:
            raise Refusal("UNITS_RETIRED")
        sources, destinations = MOVES[move.kind]
        if source.type not in sources or destination.type not in destinations:
            raise Refusal("MOVEMENT_NOT_ALLOWED")
        source.check_send()
        destination.check_receive()
        if move.hold_id is not None:
            hold_key = (move.party, move.hold_id)
            hold = self.holds.get(hold_key)
            if hold is None:
                raise Refusal("UNKNOWN_HOLD")
            if hold.status != "ACTIVE":
                raise Refusal("HOLD_NOT_ACTIVE")
            assert hold.expires_at is not None
            if self.clock.now >= hold.expires_at:
                raise Refusal("HOLD_EXPIRED")
            held_type, held_vintage = hold.cmd.selector[0], hold.cmd.selector[1]
            if (
                hold.cmd.account != source.account_id
                or move.selector[0] != held_type
                or move.selector[1] not in (None, held_vintage)
                or move.quantity > hold.cmd.quantity
            ):
                raise Refusal("HOLD_MISMATCH")
            in_hold = sorted(source.holds.pop(hold_key))
            taken = in_hold[: move.quantity]
            source.available |= set(in_hold[move.quantity :])
            hold.status = "SETTLED"
            hold.settled_quantity = move.quantity
        else:
            candidates = sorted(s for s in source.available if matches(move.selector, s[0]))
            wanted = move.quantity
            debt_key: tuple[str, int] | None = None
            if (
                move.kind == "ALLOCATION_RETURN"
                and move.selector[0] == "CEA"
                and move.selector[1] is not None
            ):
                wanted = min(wanted, len(candidates))  # the rest becomes next year's debt
                debt_key = (source.account_id, move.selector[1] + 1)
            elif move.kind == "ALLOCATION" and move.selector[0] == "CEA":
                # A debt carried into the allocation's year is deducted first: those
                # units stay where they are (the year: the vintage, else the oldest
                # matching class's, as FIFO takes it).
                year = move.selector[1]
                if year is None and candidates:
                    year = candidates[0][0][1]
                if year is not None:
                    debt_key = (destination.account_id, year)
                    wanted -= min(self.debt.get(debt_key, 0), move.quantity)
            if len(candidates) < wanted:
                raise Refusal("INSUFFICIENT_UNITS")
            taken = candidates[:wanted]
            source.available -= set(taken)
            if debt_key is not None and move.kind == "ALLOCATION":
                deducted = move.quantity - wanted
                self.debt[debt_key] = self.debt.get(debt_key, 0) - deducted
                self._debt_change = (deducted, 0)
            elif debt_key is not None:
                carried = move.quantity - wanted
                self.debt[debt_key] = self.debt.get(debt_key, 0) + carried
                self._debt_change = (0, carried)
        destination.available |= set(taken)
        if move.kind == "SURRENDER":
            assert move.year is not None
            obligation = self.surrendered.setdefault((source.account_id, move.year), {})
            unit_type = move.selector[0]
            obligation[unit_type] = obligation.get(unit_type, 0) + move.quantity
        return source.account_id, destination.account_id, runs(taken)

    def _issue(self, move: Move) -> tuple[str | None, str, tuple[Block, ...]]:
        """Allowances into ISSUANCE; offsets (of a project registered at the start)
        into the project owner's account."""
        assert move.unit_class is not None and move.quantity is not None
        receiver = PROJECT_OWNER if move.unit_class[0] == "CCER" else ISSUANCE
        issuance = self._account(receiver)
        issuance.check_receive()
        first = self.issued.get(move.unit_class, 0) + 1
        last = first + move.quantity - 1
        self.issued[move.unit_class] = last
        block = (move.unit_class, first, last)
        issuance.available |= serials_of([block])
        return None, receiver, (block,)

    def _reverse(self, move: Move) -> tuple[str | None, str, tuple[Block, ...]]:
        assert move.reverses is not None
        original = self.txns.get(move.reverses)
        if original is None:
            raise Refusal("UNKNOWN_TRANSACTION")
        if original.status != "COMPLETED" or original.move.kind in ("ISSUANCE", "REVERSAL"):
            raise Refusal("TRANSACTION_NOT_REVERSIBLE")
        if original.reversed:
            raise Refusal("TRANSACTION_ALREADY_REVERSED")
        assert original.source is not None and original.destination is not None
        source = self.accounts[original.destination]
        destination = self.accounts[original.source]
        source.check_send()
        destination.check_receive()
        following = None
        if original.carried:  # a short return: only while no allocation has paid its debt
            assert original.move.selector is not None and original.move.selector[1] is not None
            following = (original.source, original.move.selector[1] + 1)
            if self.debt.get(following, 0) < original.carried:
                raise Refusal("TRANSACTION_NOT_REVERSIBLE")
        serials = serials_of(original.blocks)
        if not serials <= source.available:
            raise Refusal("UNITS_NOT_HELD")
        if following is not None:
            self.debt[following] -= original.carried
        if original.deducted:  # the debt an allocation paid is owed again
            assert original.move.selector is not None
            year = original.move.selector[1]
            if year is None and original.blocks:
                year = original.blocks[0][0][1]
            # As the registry: with no vintage and nothing moved, the year is unknown and
            # nothing is restored (a gap of the registry, noted for a later issue).
            if year is not None:
                key = (original.destination, year)
                self.debt[key] = self.debt.get(key, 0) + original.deducted
        source.available -= serials
        destination.available |= serials
        original.reversed = True
        if original.move.kind == "SURRENDER":
            assert original.move.year is not None and original.move.selector is not None
            obligation = self.surrendered[(original.source, original.move.year)]
            unit_type = original.move.selector[0]
            obligation[unit_type] -= len(serials)
        return source.account_id, destination.account_id, original.blocks

    # -- holds ------------------------------------------------------------------------

    def place_hold(self, party: str, cmd: HoldCmd) -> HoldSeen | Raised:
        key = (party, cmd.hold_id)
        existing = self.holds.get(key)
        if existing is not None:
            if existing.cmd.content() != cmd.content():
                return Raised(HoldExistsWithDifferentContent, "HOLD_EXISTS_WITH_DIFFERENT_CONTENT")
            return self.hold_view(key, replayed=True)
        try:
            account = self._account(cmd.account)
            if account.type not in HOLDERS:
                raise Refusal("MOVEMENT_NOT_ALLOWED")
            account.check_send()
            candidates = sorted(s for s in account.available if matches(cmd.selector, s[0]))
            if len(candidates) < cmd.quantity:
                raise Refusal("INSUFFICIENT_UNITS")
        except Refusal as refusal:
            self.holds[key] = HoldRecord(cmd, "REFUSED", refusal.reason, None)
            return self.hold_view(key)
        taken = set(candidates[: cmd.quantity])
        account.available -= taken
        account.holds[key] = taken
        self.holds[key] = HoldRecord(
            cmd, "ACTIVE", "", self.clock.now + timedelta(seconds=cmd.timeout)
        )
        return self.hold_view(key)

    def end_hold(self, key: tuple[str, str], final: str) -> HoldSeen | Raised:
        """Release (final RELEASED) or expire (final EXPIRED) a hold."""
        hold = self.holds.get(key)
        if hold is None:
            return Raised(UnknownHold, "UNKNOWN_HOLD")
        if hold.status == final:
            return HoldSeen(
                final,
                hold.refusal_reason,
                hold.cmd.account,
                hold.cmd.quantity,
                (),
                hold.expires_at,
                hold.settled_quantity,
                True,
            )
        account = self.accounts.get(hold.cmd.account)
        if account is None:
            return Raised(UnknownAccount, "UNKNOWN_ACCOUNT")
        if hold.status != "ACTIVE":
            return Raised(HoldNotActive, "HOLD_NOT_ACTIVE")
        assert hold.expires_at is not None
        if final == "EXPIRED" and self.clock.now < hold.expires_at:
            return Raised(HoldNotExpired, "HOLD_NOT_EXPIRED")
        serials = account.holds.pop(key)
        account.available |= serials
        hold.status = final
        return HoldSeen(
            final, "", hold.cmd.account, hold.cmd.quantity, runs(serials), hold.expires_at, 0, False
        )

    def expire_due_holds(self) -> list[HoldSeen | Raised]:
        return [
            self.end_hold(key, "EXPIRED")
            for key, hold in list(self.holds.items())
            if hold.status == "ACTIVE"
            and hold.expires_at is not None
            and self.clock.now >= hold.expires_at
        ]

    def hold_view(self, key: tuple[str, str], *, replayed: bool = False) -> HoldSeen:
        hold = self.holds[key]
        blocks: tuple[Block, ...] = ()
        if hold.status == "ACTIVE":
            blocks = runs(self.accounts[hold.cmd.account].holds[key])
        return HoldSeen(
            hold.status,
            hold.refusal_reason,
            hold.cmd.account,
            hold.cmd.quantity,
            blocks,
            hold.expires_at,
            hold.settled_quantity,
            replayed,
        )


# == stores ======================================================================


class Store(Protocol):
    def open(self, clock: FakeClock) -> Registry: ...

    def close(self, registry: Registry) -> None: ...


class MemoryStore:
    def open(self, clock: FakeClock) -> Registry:
        return build_registry(Settings("memory:"), clock=clock)

    def close(self, registry: Registry) -> None:
        registry.close()


class SqliteStore:
    """A new SQLite file per example."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def path(self) -> Path:
        return self.directory / f"example-{self.count}.sqlite"

    def open(self, clock: FakeClock) -> Registry:
        self.count += 1
        return build_registry(Settings(f"sqlite:///{self.path()}"), clock=clock)

    def close(self, registry: Registry) -> None:
        registry.close()
        self.path().unlink(missing_ok=True)


class PostgresStore:
    """One migrated database per test; every example starts from emptied tables (all but
    the migration tool's own version table)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, clock: FakeClock) -> Registry:
        return build_registry(Settings(self.url), clock=clock)

    def close(self, registry: Registry) -> None:
        registry.close()
        with psycopg.connect(self.url, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename <> 'alembic_version'"
                )
            ]
            if tables:
                conn.execute(
                    sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                        sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                    )
                )


# == the state machine =============================================================

ANY_ACCOUNT = st.sampled_from(ALL_ACCOUNTS)
HOLDER_ACCOUNT = st.sampled_from(sorted(POOL))
COMPLIANCE_ACCOUNT = st.sampled_from(["CMP-1", "CMP-2"])
QUANTITY = st.integers(1, 40)
SELECTOR = st.sampled_from(SELECTORS)
BATCH_ENTRIES = [
    "new",
    "new",
    "on-hold",
    "malformed",
    "repeat",
    "repeat-altered",
    "earlier",
    "earlier-altered",
]


@dataclass(frozen=True)
class Snapshot:
    """What the registry answers to every query, at one log position."""

    accounts: dict[str, tuple[str, str] | None]
    holdings: dict[str, tuple[HoldingSeen, ...] | None]
    supply: dict[UC, tuple[int, int]]
    holds: dict[tuple[str, str], HoldSeen | Raised]
    surrendered: dict[tuple[str, int], dict[str, int]]


class LedgerMachine(RuleBasedStateMachine):
    """One example: a fresh registry on ``store``, a fresh model, random commands.

    Every rule calls the registry and asserts that it answers what the model predicts
    (and that errors, replays and conflicts write nothing to the log); ``stats`` counts
    the outcomes compared, across examples, so a test can check the run was not vacuous.
    """

    def __init__(self, store: Store, stats: Counter[str]) -> None:
        super().__init__()
        self.store = store
        self.stats = stats
        self.clock = FakeClock()
        self.registry = store.open(self.clock)
        self.model = Model(self.clock)
        self.ids = 0
        self.sent: list[Move] = []
        self.first_seen: dict[tuple[str, str], TxnSeen] = {}
        self.hold_cmds: list[HoldCmd] = []
        self.snapshot: tuple[object, Snapshot] | None = None

    def teardown(self) -> None:
        self.store.close(self.registry)

    # -- helpers --------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.ids}"

    def position(self) -> int:
        return int(self.registry.recorder.max_notification_id() or 0)

    def check(
        self,
        label: str,
        call: Callable[[], T],
        view: Callable[[T], V],
        expected: V | Raised,
        *,
        stores_nothing: bool = False,
    ) -> V | Raised:
        """Call the registry, compare with the model, and count the outcome."""
        before = self.position()
        observed = attempt(call, view)
        assert observed == expected, f"{label}:\n  registry: {observed}\n  model:    {expected}"
        if stores_nothing or isinstance(observed, Raised) or getattr(observed, "replayed", False):
            assert self.position() == before, f"{label} wrote to the log: {observed}"
        if isinstance(observed, Raised):
            self.stats[f"{label} raised {observed.reason}"] += 1
        return observed

    def send_move(self, move: Move, *, remember: bool = True) -> None:
        key = (move.party, move.txn_id)
        was_recorded = key in self.model.txns
        expected = self.model.move(move)
        label = f"{move.kind}{' on hold' if move.hold_id else ''}"
        original = self.model.txns.get(move.reverses) if move.reverses else None
        if original is not None and not was_recorded:
            label += f" of {original.move.kind}"
        results: list[TransactionResult] = []

        def call() -> TransactionResult:
            results.append(send(self.registry, move))
            return results[-1]

        observed = self.check(label, call, seen_txn, expected)
        if results:  # a new record tells its log position (read your writes); a replay not
            assert results[0].position == (None if results[0].replayed else self.position())
        if isinstance(observed, TxnSeen):
            self.stats[
                f"{label} {'replayed ' if observed.replayed else ''}"
                f"{observed.status} {observed.refusal_reason}".strip()
            ] += 1
            if was_recorded:  # a replay answers exactly what the first call answered
                first = self.first_seen[key]
                assert observed.replayed
                assert (observed.status, observed.refusal_reason, observed.blocks) == (
                    first.status,
                    first.refusal_reason,
                    first.blocks,
                )
            else:
                self.first_seen[key] = observed
        elif (
            was_recorded
            and malformed(move) is None
            and move.content() != self.model.txns[key].move.content()
        ):
            assert observed == Raised(TransactionExistsWithDifferentContent, TEWDC)
        if remember:
            self.sent.append(move)

    def draw_account(
        self,
        data: st.DataObject,
        label: str,
        types: frozenset[str],
        *,
        funded: bool = False,
        other_than: str | None = None,
    ) -> str:
        """Mostly an open account of one of ``types`` (holding units, if ``funded``; not
        ``other_than``), else any account at all: national, closed, frozen or unknown."""
        good = sorted(
            a
            for a, account in self.model.accounts.items()
            if account.type in types
            and account.state != "CLOSED"
            and (account.available or not funded)
            and a != other_than
        )
        if good and data.draw(st.integers(0, 3), label=f"{label} well chosen?") > 0:
            return data.draw(st.sampled_from(good), label=label)
        return data.draw(ANY_ACCOUNT, label=label)

    def draw_units(
        self, data: st.DataObject, account_id: str, *, trade: bool = False
    ) -> tuple[Sel, int]:
        """Mostly units the account holds (up to one more than it has), else anything."""
        account = self.model.accounts.get(account_id)
        classes = sorted({uc for uc, _ in account.available}) if account else []
        if not classes or data.draw(st.integers(0, 3), label="arbitrary units?") == 0:
            if trade:
                unit_type, vintage = data.draw(st.sampled_from(TRADE_UNITS), label="units")
                return (unit_type, vintage, None), data.draw(QUANTITY, label="quantity")
            return data.draw(SELECTOR, label="units"), data.draw(QUANTITY, label="quantity")
        assert account is not None
        unit_type, vintage, project = data.draw(st.sampled_from(classes), label="class")
        options: list[Sel] = [(unit_type, None, None), (unit_type, vintage, None)]
        if project and not trade:
            options += [(unit_type, None, project), (unit_type, vintage, project)]
        selector = data.draw(st.sampled_from(options), label="units")
        have = sum(1 for uc, _ in account.available if matches(selector, uc))
        return selector, data.draw(st.integers(1, have + 1), label="quantity")

    def new_trade(self, data: st.DataObject, quantity: int | None = None) -> Move:
        seller = self.draw_account(data, "seller", HOLDERS, funded=True)
        buyer = self.draw_account(data, "buyer", HOLDERS, other_than=seller)
        selector, drawn = self.draw_units(data, seller, trade=True)
        return Move(
            EXCHANGE.party,
            self.next_id("TRD"),
            "SETTLEMENT",
            seller,
            buyer,
            drawn if quantity is None else quantity,
            selector,
            reason=TRADE_REASON,
        )

    def trade_on_hold(self, data: st.DataObject, cmd: HoldCmd | None = None) -> Move:
        """A trade against ``cmd``, else against an active hold (mostly), any earlier hold,
        or an unknown one."""
        if cmd is None:
            active = [
                c
                for c in self.hold_cmds
                if self.model.holds[(EXCHANGE.party, c.hold_id)].status == "ACTIVE"
            ]
            which = data.draw(st.integers(0, 9), label="which hold")
            if which == 0 or not self.hold_cmds:
                cmd = HoldCmd("NO-SUCH-HOLD", "TRD-1", ("CEA", None, None), 5, 60)
            elif which <= 2 or not active:
                cmd = data.draw(st.sampled_from(self.hold_cmds), label="hold")
            else:
                cmd = data.draw(st.sampled_from(active), label="active hold")
        self.maybe_reach_expiry(data, cmd.hold_id)
        seller = cmd.account
        if data.draw(st.integers(0, 9), label="other seller?") == 0:
            seller = data.draw(ANY_ACCOUNT, label="seller")
        buyer = self.draw_account(data, "buyer", HOLDERS, other_than=seller)
        unit_type, vintage = cmd.selector[0], cmd.selector[1]
        units = data.draw(st.integers(0, 3), label="units as held?")
        if units == 0:
            unit_type, vintage = data.draw(st.sampled_from(TRADE_UNITS), label="units")
        elif units == 1:
            vintage = None
        quantity = data.draw(st.integers(1, cmd.quantity), label="quantity")
        if data.draw(st.integers(0, 9), label="more than held?") == 0:
            quantity = cmd.quantity + 1
        return Move(
            EXCHANGE.party,
            self.next_id("TRD"),
            "SETTLEMENT",
            seller,
            buyer,
            quantity,
            (unit_type, vintage, None),
            hold_id=cmd.hold_id,
            reason=TRADE_REASON,
        )

    def place(self, cmd: HoldCmd) -> None:
        expected = self.model.place_hold(EXCHANGE.party, cmd)
        observed = self.check(
            "HOLD",
            lambda: self.registry.place_hold(
                EXCHANGE,
                cmd.hold_id,
                cmd.account,
                unit_selector(cmd.selector),
                cmd.quantity,
                cmd.timeout,
            ),
            seen_hold,
            expected,
        )
        if isinstance(observed, HoldSeen):
            self.stats[
                f"HOLD {'replayed ' if observed.replayed else ''}{observed.status} "
                f"{observed.refusal_reason}".strip()
            ] += 1

    def maybe_reach_expiry(self, data: st.DataObject, hold_id: str) -> None:
        """Sometimes move the clock to one second before, or exactly to, a hold's expiry."""
        hold = self.model.holds.get((EXCHANGE.party, hold_id))
        if (
            hold is None
            or hold.status != "ACTIVE"
            or hold.expires_at is None
            or hold.expires_at <= self.clock.now
        ):
            return
        early = data.draw(st.sampled_from([None, 1, 0]), label="seconds before expiry")
        if early is not None:
            self.clock.advance((hold.expires_at - self.clock.now).total_seconds() - early)

    def end_hold(self, hold_id: str, final: str) -> None:
        key = (EXCHANGE.party, hold_id)
        expected = self.model.end_hold(key, final)
        if final == "RELEASED":

            def call() -> HoldResult:
                return self.registry.release_hold(EXCHANGE, hold_id, "order cancelled")
        else:

            def call() -> HoldResult:
                return self.registry.expire_hold(REGULATOR, EXCHANGE.party, hold_id)

        observed = self.check(final, call, seen_hold, expected)
        if isinstance(observed, HoldSeen):
            self.stats[f"{final} {'replayed' if observed.replayed else 'done'}"] += 1

    # -- accounts ---------------------------------------------------------------------

    @initialize(data=st.data())
    def open_accounts_and_fund_them(self, data: st.DataObject) -> None:
        """Start with accounts to trade between and units in them (every call checked)."""
        drawn = data.draw(st.sets(HOLDER_ACCOUNT, min_size=3), label="accounts")
        accounts = sorted(drawn | {PROJECT_OWNER})
        for account_id in accounts:
            self.open_account(account_id, "")
        for project in sorted({uc[2] for uc in UNIT_CLASSES if uc[2]}):
            register_project(self.registry, project, PROJECT_OWNER)
        issues = data.draw(
            st.lists(
                st.tuples(st.sampled_from(UNIT_CLASSES), st.integers(20, 100)),
                min_size=1,
                max_size=3,
            ),
            label="issues",
        )
        for uc, quantity in issues:
            self.issue_units(uc, quantity)
        for account_id in accounts:
            source = ISSUANCE
            if account_id != PROJECT_OWNER:
                source = data.draw(st.sampled_from([ISSUANCE, PROJECT_OWNER]), label="from")
            selector, quantity = self.draw_units(data, source)
            self.send_move(
                Move(
                    REGULATOR.party,
                    self.next_id("TRF"),
                    "TRANSFER",
                    source,
                    account_id,
                    quantity,
                    selector,
                    reason="opening balance",
                )
            )

    @rule(account_id=HOLDER_ACCOUNT, variant=st.sampled_from(["", " (renamed)"]))
    def open_account(self, account_id: str, variant: str) -> None:
        """New, or a retry with the same or with other holder details."""
        name = f"{account_id} Holder{variant}"
        expected = self.model.open_account(account_id, POOL[account_id], name)
        observed = self.check(
            "OPEN",
            lambda: self.registry.open_account(
                REGULATOR, account_id, AccountType(POOL[account_id]), holder_for(account_id, name)
            ),
            seen_account,
            expected,
        )
        if isinstance(observed, AccountSeen):
            self.stats[f"OPEN replayed={observed.replayed}"] += 1

    @rule(data=st.data(), action=st.sampled_from(["freeze", "unfreeze", "close"]))
    def change_account_state(self, data: st.DataObject, action: str) -> None:
        """Mostly freeze an account holding units, unfreeze a frozen one or close an empty
        one; else the action on any account (national, closed, unknown...)."""
        accounts = self.model.accounts
        if action == "freeze":
            good = [
                a
                for a, acc in accounts.items()
                if acc.state == "OPEN" and (acc.available or acc.holds)
            ]
        elif action == "unfreeze":
            good = [a for a, acc in accounts.items() if acc.state == "FROZEN"]
        else:
            good = [
                a
                for a, acc in accounts.items()
                if a not in NATIONAL
                and acc.state != "CLOSED"
                and not acc.available
                and not acc.holds
            ]
        if good and data.draw(st.integers(0, 3), label="well chosen?") > 0:
            account_id = data.draw(st.sampled_from(sorted(good)), label="account")
        else:
            account_id = data.draw(ANY_ACCOUNT, label="account")
        change = {
            "freeze": self.registry.freeze_account,
            "unfreeze": self.registry.unfreeze_account,
            "close": self.registry.close_account,
        }[action]
        expected = self.model.change_state(action, account_id)
        observed = self.check(
            action.upper(),
            lambda: change(REGULATOR, account_id, f"{action} for the test"),
            seen_account,
            expected,
        )
        if isinstance(observed, AccountSeen):
            self.stats[f"{action.upper()} done"] += 1

    # -- movements ------------------------------------------------------------------

    @rule(uc=st.sampled_from(UNIT_CLASSES), quantity=st.integers(1, 60))
    def issue_units(self, uc: UC, quantity: int) -> None:
        self.send_move(
            Move(
                REGULATOR.party,
                self.next_id("ISS"),
                "ISSUANCE",
                None,
                ISSUANCE,
                quantity,
                unit_class=uc,
                reason="issuance",
            )
        )

    @rule(data=st.data())
    def allocate(self, data: st.DataObject) -> None:
        source = self.draw_account(data, "source", MOVES["ALLOCATION"][0], funded=True)
        destination = self.draw_account(data, "to", MOVES["ALLOCATION"][1], other_than=source)
        selector, quantity = self.draw_units(data, source)
        self.send_move(
            Move(
                REGULATOR.party,
                self.next_id("ALC"),
                "ALLOCATION",
                source,
                destination,
                quantity,
                selector,
                reason="free allocation",
            )
        )

    @rule(data=st.data())
    def return_allocation(self, data: st.DataObject) -> None:
        source = self.draw_account(data, "source", MOVES["ALLOCATION_RETURN"][0], funded=True)
        selector, quantity = self.draw_units(data, source)
        self.send_move(
            Move(
                REGULATOR.party,
                self.next_id("RET"),
                "ALLOCATION_RETURN",
                source,
                RESERVE,
                quantity,
                selector,
                reason="true-up",
            )
        )

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        source = self.draw_account(data, "source", MOVES["TRANSFER"][0], funded=True)
        destination = self.draw_account(data, "to", MOVES["TRANSFER"][1], other_than=source)
        selector, quantity = self.draw_units(data, source)
        self.send_move(
            Move(
                REGULATOR.party,
                self.next_id("TRF"),
                "TRANSFER",
                source,
                destination,
                quantity,
                selector,
                reason="transfer",
            )
        )

    @rule(data=st.data())
    def settle_trade(self, data: st.DataObject) -> None:
        """One trade, sometimes against a hold."""
        if bool(self.hold_cmds) and data.draw(st.booleans(), label="against a hold?"):
            self.send_move(self.trade_on_hold(data))
        else:
            self.send_move(self.new_trade(data))

    @rule(data=st.data())
    def settle_trades(self, data: st.DataObject) -> None:
        """A batch: new, malformed, on-hold, repeated in the batch, and earlier trades."""
        earlier = [m for m in self.sent if m.kind == "SETTLEMENT"]
        moves: list[Move] = []
        for _ in range(data.draw(st.integers(1, 6), label="batch size")):
            entry = data.draw(st.sampled_from(BATCH_ENTRIES), label="entry")
            if entry in ("repeat", "repeat-altered") and moves:
                move = data.draw(st.sampled_from(moves), label="repeated")
                moves.append(move if entry == "repeat" else move.altered())
            elif entry in ("earlier", "earlier-altered") and earlier:
                move = data.draw(st.sampled_from(earlier), label="earlier")
                moves.append(move if entry == "earlier" else move.altered())
            elif entry == "malformed":
                moves.append(self.new_trade(data, quantity=0))
            elif entry == "on-hold":
                moves.append(self.trade_on_hold(data))
            else:
                moves.append(self.new_trade(data))
        recorded_before = len(self.model.txns)
        expected = self.model.settle_batch(moves)
        results: list[TradeResult] = []

        def call() -> list[TradeResult]:
            results.extend(self.registry.settle_trades(EXCHANGE, [trade_of(m) for m in moves]))
            return results

        observed = self.check(
            "BATCH",
            call,
            lambda rs: [seen_trade(r) for r in rs],
            expected,
            stores_nothing=len(self.model.txns) == recorded_before,
        )
        assert isinstance(observed, list)
        for raw in results:  # new records: the batch's one log position; others: none
            new = raw.transaction is not None and not raw.transaction.replayed
            assert raw.position == (self.position() if new else None), raw
        for move, seen in zip(moves, observed, strict=True):
            on_hold = " on hold" if move.hold_id else ""
            self.stats[f"BATCH{on_hold} {seen.outcome} {seen.reason}".strip()] += 1
            key = (move.party, move.txn_id)
            if seen.transaction is not None and key not in self.first_seen:
                self.first_seen[key] = seen.transaction
        self.sent.extend(dict.fromkeys(moves))

    @rule(data=st.data(), year=st.sampled_from([2025, 2026]))
    def surrender(self, data: st.DataObject, year: int) -> None:
        """For years whose rules accept every vintage here, with emissions verified so
        high that no CCER cap binds: the compliance rules have tests of their own."""
        source = self.draw_account(data, "source", MOVES["SURRENDER"][0], funded=True)
        with suppress(RegistryError):  # not an open compliance account: refused for that
            self.registry.record_verified_emissions(
                REGULATOR, [EmissionsRow(source, year, 10**12, "verified")]
            )
        selector, quantity = self.draw_units(data, source)
        move = Move(
            REGULATOR.party,
            self.next_id("SUR"),
            "SURRENDER",
            source,
            SURRENDER,
            quantity,
            selector,
            year=year,
            reason="compliance",
        )
        self.send_move(move)
        self.maybe_reverse_at_once(data, move)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        source = self.draw_account(data, "source", MOVES["CANCELLATION"][0], funded=True)
        selector, quantity = self.draw_units(data, source)
        move = Move(
            REGULATOR.party,
            self.next_id("CXL"),
            "CANCELLATION",
            source,
            CANCELLATION,
            quantity,
            selector,
            reason="voluntary",
        )
        self.send_move(move)
        self.maybe_reverse_at_once(data, move)

    def maybe_reverse_at_once(self, data: st.DataObject, move: Move) -> None:
        """Sometimes the regulator corrects a retirement right away (retired units move
        only through a reversal, and a surrender's obligation shrinks with it)."""
        if data.draw(st.integers(0, 3), label="reverse it at once?") == 0:
            self.send_move(
                Move(
                    REGULATOR.party,
                    self.next_id("REV"),
                    "REVERSAL",
                    None,
                    None,
                    None,
                    reverses=(move.party, move.txn_id),
                    reason="correction",
                )
            )

    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        """Reverse a completed, an already reversed, any earlier, or an unknown transaction."""
        txns = self.model.txns
        reversible: dict[str, list[tuple[str, str]]] = {}  # by kind, each kind as likely
        for key, record in txns.items():
            if (
                record.status == "COMPLETED"
                and not record.reversed
                and record.move.kind not in ("ISSUANCE", "REVERSAL")
            ):
                kind = record.move.kind + (" on hold" if record.move.hold_id else "")
                reversible.setdefault(kind, []).append(key)
        reversed_ = [k for k, r in txns.items() if r.reversed]
        pools = [*reversible.values(), *reversible.values(), reversed_, list(txns)]
        pools = [pool for pool in pools if pool]
        target: tuple[str, str]
        if pools and data.draw(st.integers(0, 5), label="unknown target?") > 0:
            pool = data.draw(st.sampled_from(pools), label="pool")
            target = data.draw(st.sampled_from(pool), label="target")
        else:
            party = data.draw(st.sampled_from(sorted(PRINCIPALS)), label="party")
            target = (party, "NO-SUCH-TXN")
        self.send_move(
            Move(
                REGULATOR.party,
                self.next_id("REV"),
                "REVERSAL",
                None,
                None,
                None,
                reverses=target,
                reason="correction",
            )
        )

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), same=st.booleans())
    def retry_transaction(self, data: st.DataObject, same: bool) -> None:
        """The same id again: a replay when the content is the same, else a conflict."""
        move = data.draw(st.sampled_from(self.sent), label="retried")
        self.send_move(move if same else move.altered(), remember=False)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def read_back_transaction(self, data: st.DataObject) -> None:
        move = data.draw(st.sampled_from(self.sent), label="transaction")
        self.check(
            "GET",
            lambda: self.registry.get_transaction(move.party, move.txn_id),
            seen_txn,
            self.model.recorded(move.party, move.txn_id),
            stores_nothing=True,
        )

    # -- holds --------------------------------------------------------------------------

    @rule(data=st.data(), timeout=st.sampled_from(TIMEOUTS))
    def place_hold(self, data: st.DataObject, timeout: int) -> None:
        """Place a hold; sometimes the exchange settles a trade against it at once."""
        account = self.draw_account(data, "account", HOLDERS, funded=True)
        selector, quantity = self.draw_units(data, account)
        cmd = HoldCmd(self.next_id("ORD"), account, selector, quantity, timeout)
        self.hold_cmds.append(cmd)
        self.place(cmd)
        if data.draw(st.booleans(), label="a trade against it now?"):
            self.send_move(self.trade_on_hold(data, cmd))

    @precondition(lambda self: bool(self.hold_cmds))
    @rule(data=st.data(), same=st.booleans())
    def retry_place_hold(self, data: st.DataObject, same: bool) -> None:
        cmd = data.draw(st.sampled_from(self.hold_cmds), label="hold")
        self.place(cmd if same else replace(cmd, quantity=cmd.quantity + 1))

    @precondition(lambda self: bool(self.hold_cmds))
    @rule(data=st.data(), final=st.sampled_from(["RELEASED", "EXPIRED"]))
    def end_hold_rule(self, data: st.DataObject, final: str) -> None:
        """Release or expire a hold in any state (or an unknown one)."""
        ids = [cmd.hold_id for cmd in self.hold_cmds]
        active = [key[1] for key, hold in self.model.holds.items() if hold.status == "ACTIVE"]
        due = [
            key[1]
            for key, hold in self.model.holds.items()
            if hold.status == "ACTIVE"
            and hold.expires_at is not None
            and hold.expires_at <= self.clock.now
        ]
        preferred = (due if final == "EXPIRED" else []) or active or ids
        hold_id = data.draw(
            st.one_of(st.sampled_from(preferred), st.sampled_from(ids), st.just("NO-SUCH-HOLD")),
            label="hold id",
        )
        if final == "EXPIRED":
            self.maybe_reach_expiry(data, hold_id)
        self.end_hold(hold_id, final)

    @rule()
    def expire_due_holds(self) -> None:
        expected = self.model.expire_due_holds()
        observed = self.check(
            "EXPIRE-DUE",
            self.registry.expire_due_holds,
            lambda rs: [seen_hold(r) for r in rs],
            expected,
        )
        if isinstance(observed, list):
            self.stats["EXPIRE-DUE done"] += len(observed)

    @rule(seconds=st.sampled_from([30, 600, 3600, 7200]))
    def advance_clock(self, seconds: int) -> None:
        """Time passes (holds reach their expiry; see also ``maybe_reach_expiry``)."""
        self.clock.advance(seconds)

    # -- invariants -------------------------------------------------------------------

    def observe(self) -> Snapshot:
        """The registry's answers, read again only when the log or the model has grown."""
        key = (self.position(), tuple(self.model.holds), tuple(self.model.surrendered))
        if self.snapshot is not None and self.snapshot[0] == key:
            return self.snapshot[1]
        registry = self.registry
        accounts: dict[str, tuple[str, str] | None] = {}
        holdings: dict[str, tuple[HoldingSeen, ...] | None] = {}
        for account_id in ALL_ACCOUNTS:
            try:
                view = registry.get_account(account_id)
            except UnknownAccount:
                with pytest.raises(UnknownAccount):
                    registry.get_holdings(account_id)
                accounts[account_id] = holdings[account_id] = None
                continue
            accounts[account_id] = (view.account_type.value, view.state.value)
            holdings[account_id] = tuple(seen_holding(h) for h in registry.get_holdings(account_id))
        supply = {
            (line.unit_class.unit_type.value, line.unit_class.vintage, line.unit_class.project): (
                line.issued,
                line.held_in_accounts,
            )
            for line in registry.supply()
        }
        holds = {key: attempt(get_hold(registry, key), seen_hold) for key in self.model.holds}
        surrendered = {key: registry.get_surrendered(*key) for key in self.model.surrendered}
        snapshot = Snapshot(accounts, holdings, supply, holds, surrendered)
        self.snapshot = (key, snapshot)
        return snapshot

    @invariant()
    def accounts_and_holdings_match_model(self) -> None:
        snapshot = self.observe()
        for account_id in ALL_ACCOUNTS:
            assert snapshot.accounts[account_id] == self.model.account_view(account_id), (
                f"{account_id}: registry {snapshot.accounts[account_id]}, "
                f"model {self.model.account_view(account_id)}"
            )
            assert snapshot.holdings[account_id] == self.model.holdings(account_id), (
                f"{account_id}:\n  registry: {snapshot.holdings[account_id]}\n"
                f"  model:    {self.model.holdings(account_id)}"
            )

    @invariant()
    def units_issued_equal_units_held(self) -> None:
        snapshot = self.observe()
        for uc, (issued, held) in snapshot.supply.items():
            assert issued == held, f"{uc}: issued {issued}, held in accounts {held}"
        issued_per_class = {uc: issued for uc, (issued, _) in snapshot.supply.items()}
        assert issued_per_class == self.model.issued, (issued_per_class, self.model.issued)

    @invariant()
    def quantities_are_consistent(self) -> None:
        """No negative quantities; held <= total = held + available = sum of the blocks."""
        for views in self.observe().holdings.values():
            for view in views or ():
                assert 0 <= view.held <= view.total, view
                assert 0 <= view.available <= view.total, view
                assert view.total == view.held + view.available, view
                assert view.total == sum(last - first + 1 for _, first, last in view.blocks)
                assert all(1 <= first <= last for _, first, last in view.blocks), view

    @invariant()
    def serial_blocks_partition_the_issued_ranges(self) -> None:
        """Across all accounts, the blocks of a class are disjoint and cover 1..issued."""
        snapshot = self.observe()
        by_class: dict[UC, list[tuple[int, int]]] = {}
        for views in snapshot.holdings.values():
            for view in views or ():
                for uc, first, last in view.blocks:
                    by_class.setdefault(uc, []).append((first, last))
        assert by_class.keys() <= snapshot.supply.keys()
        for uc, (issued, _) in snapshot.supply.items():
            expected_first = 1
            for first, last in sorted(by_class.get(uc, [])):
                assert first == expected_first, (
                    f"{uc}: block {first}..{last} "
                    f"{'overlaps' if first < expected_first else 'leaves a gap before it'}"
                )
                expected_first = last + 1
            assert expected_first - 1 == issued, f"{uc}: blocks end at {expected_first - 1}"

    @invariant()
    def holds_match_model(self) -> None:
        snapshot = self.observe()
        for key in self.model.holds:
            assert snapshot.holds[key] == self.model.hold_view(key), (
                f"hold {key}:\n  registry: {snapshot.holds[key]}\n"
                f"  model:    {self.model.hold_view(key)}"
            )

    @invariant()
    def obligations_match_model(self) -> None:
        snapshot = self.observe()
        assert snapshot.surrendered == self.model.surrendered, (
            f"surrendered per (account, year):\n  registry: {snapshot.surrendered}\n"
            f"  model:    {self.model.surrendered}"
        )


# == projects, holder transfers and origin detentions =================================
#
# A second machine, on its own small world: one holder's project, compliance and trading
# accounts (one unified social credit code), another holder's account and an account with
# no code. Offsets of P-A and P-B are issued to the project account, spread by regulator
# transfers and moved by the holder's own transfers; a project is suspended and
# reinstated, detained, rebutted by holders, cleared for one holder or for all, and
# confirmed. The model keeps serial sets per account and, per detention, its holders and
# the serials cleared; it predicts every answer. After every step: the model's holdings
# and detained quantities equal the registry's, units are conserved, a serial that was
# detained is where it was unless a FORFEITURE took it to CN-CANCELLATION, and after a
# confirmation no uncleared unit of the origin is held anywhere.

CODE_A = "91370000163060000K"
CODE_B = "91110000100001234X"
ORIGIN_ACCOUNTS: dict[str, tuple[str, str]] = {
    "PRJ-A": ("PROJECT", CODE_A),
    "CMP-A": ("COMPLIANCE", CODE_A),
    "TRD-A": ("TRADING", CODE_A),
    "CMP-B": ("COMPLIANCE", CODE_B),
    "TRD-N": ("TRADING", ""),
}
"""Account -> (type, holder's credit code): the first three are one holder's."""
OWNER_ACCOUNTS = frozenset({"COMPLIANCE", "TRADING"})
PROJECTS = ["P-A", "P-B"]
ORIGIN_CLASSES: list[UC] = [
    ("CCER", 2024, "P-A"),
    ("CCER", 2025, "P-A"),
    ("CCER", 2024, "P-B"),
    ("CEA", 2025, ""),
]
ORIGIN_SELECTORS: list[Sel] = [
    ("CCER", None, None),
    ("CCER", None, "P-A"),
    ("CCER", 2024, "P-B"),
    ("CEA", None, None),
]
OPERATOR = Principal("holder-a", "operator")
DIGEST = "ab" * 32
DAY = 86_400


@dataclass
class HolderM:
    status: str
    deadline: datetime
    quantity: int


@dataclass
class DetentionM:
    reference: str
    state: str = "DETAINED"
    holders: dict[str, HolderM] = field(default_factory=dict)
    cleared: set[Serial] = field(default_factory=set)
    forfeited: dict[str, int] = field(default_factory=dict)
    issued_then: dict[UC, int] = field(default_factory=dict)
    """Serials issued per class when confirmed: the units the forfeiture judged (the
    project stays registered, so more of it may be issued after; see the test below)."""


class OriginModel:
    """Serial sets per account (no holds here), projects' suspension, detentions."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.accounts: dict[str, set[Serial]] = {a: set() for a in [*NATIONAL, *ORIGIN_ACCOUNTS]}
        self.types = {**NATIONAL, **{a: t for a, (t, _) in ORIGIN_ACCOUNTS.items()}}
        self.issued: dict[UC, int] = {}
        self.suspended: set[str] = set()
        self.detentions: dict[str, DetentionM] = {}
        self.frozen: set[str] = set()

    def detained(self, serial: Serial) -> bool:
        detention = self.detentions.get(serial[0][2])
        return (
            detention is not None
            and detention.state == "DETAINED"
            and serial not in detention.cleared
        )

    def detained_in(self, account_id: str) -> set[Serial]:
        return {s for s in self.accounts[account_id] if self.detained(s)}

    def issue(self, uc: UC, quantity: int) -> tuple[str, str, tuple[Block, ...]]:
        if uc[0] == "CCER":
            if uc[2] in self.suspended:
                return "REFUSED", "PROJECT_SUSPENDED", ()
            detention = self.detentions.get(uc[2])
            if detention is not None and detention.state == "DETAINED":
                return "REFUSED", "ORIGIN_DETAINED", ()
        receiver = "PRJ-A" if uc[0] == "CCER" else ISSUANCE
        first = self.issued.get(uc, 0) + 1
        self.issued[uc] = first + quantity - 1
        block = (uc, first, first + quantity - 1)
        self.accounts[receiver] |= serials_of([block])
        return "COMPLETED", "", (block,)

    def move(
        self, kind: str, source: str, destination: str, sel: Sel, quantity: int
    ) -> tuple[str, str, tuple[Block, ...]]:
        """A regulator's TRANSFER or a holder's HOLDER_TRANSFER: the table, the holder,
        then restricted units skipped (refused only when the rest does not cover it)."""
        if kind == "TRANSFER":
            sources, destinations = MOVES["TRANSFER"]
        else:
            sources, destinations = HOLDERS, OWNER_ACCOUNTS
        if self.types[source] not in sources or self.types[destination] not in destinations:
            return "REFUSED", "MOVEMENT_NOT_ALLOWED", ()
        if kind == "HOLDER_TRANSFER":
            code = ORIGIN_ACCOUNTS[source][1]
            if not code or code != ORIGIN_ACCOUNTS[destination][1]:
                return "REFUSED", "DIFFERENT_HOLDER", ()
        if source in self.frozen:
            return "REFUSED", "ACCOUNT_FROZEN", ()
        candidates = sorted(s for s in self.accounts[source] if matches(sel, s[0]))
        free = [s for s in candidates if not self.detained(s)]
        if len(free) >= quantity:
            taken = set(free[:quantity])
        elif len(candidates) < quantity:
            return "REFUSED", "INSUFFICIENT_UNITS", ()
        else:
            return "REFUSED", "ORIGIN_DETAINED", ()
        self.accounts[source] -= taken
        self.accounts[destination] |= taken
        return "COMPLETED", "", runs(taken)

    def suspend(self, project: str, suspend: bool) -> str:
        if suspend == (project in self.suspended):
            return "PROJECT_SUSPENDED" if suspend else "PROJECT_NOT_SUSPENDED"
        (self.suspended.add if suspend else self.suspended.discard)(project)
        return "SUSPENDED" if suspend else "REGISTERED"

    def detain(self, project: str, reference: str, days: int) -> str:
        existing = self.detentions.get(project)
        if existing is not None and existing.state == "DETAINED":
            return "ORIGIN_ALREADY_DETAINED"
        assert existing is None, "the machine detains a project once"
        detention = DetentionM(reference)
        deadline = self.clock.now + timedelta(days=days)
        for account_id in ORIGIN_ACCOUNTS:
            held = sum(1 for s in self.accounts[account_id] if s[0][2] == project)
            if held:
                detention.holders[account_id] = HolderM("NOTIFIED", deadline, held)
        self.detentions[project] = detention
        return "DETAINED"

    def _holder(self, project: str, account_id: str) -> HolderM | str:
        detention = self.detentions.get(project)
        if detention is None:
            return "UNKNOWN_DETENTION"
        if detention.state != "DETAINED":
            return "DETENTION_NOT_ACTIVE"
        holder = detention.holders.get(account_id)
        return "HOLDER_NOT_NOTIFIED" if holder is None else holder

    def rebut(self, project: str, account_id: str) -> str:
        holder = self._holder(project, account_id)
        if isinstance(holder, str):
            return holder
        if holder.status != "NOTIFIED":
            return "REBUTTAL_ALREADY_SUBMITTED"
        if self.clock.now >= holder.deadline:
            return "REBUTTAL_DEADLINE_PASSED"
        holder.status = "UNDER_REVIEW"
        return "UNDER_REVIEW"

    def clear_holder(self, project: str, account_id: str) -> str:
        holder = self._holder(project, account_id)
        if isinstance(holder, str):
            return holder
        if holder.status == "CLEARED":
            return "CLEARED"
        if holder.status != "UNDER_REVIEW":
            return "REBUTTAL_NOT_SUBMITTED"
        holder.status = "CLEARED"
        self.detentions[project].cleared |= {
            s for s in self.accounts[account_id] if s[0][2] == project
        }
        return "CLEARED"

    def clear_origin(self, project: str) -> str:
        detention = self.detentions[project]
        assert detention.state == "DETAINED"
        detention.state = "CLEARED"
        return "CLEARED"

    def confirm(self, project: str) -> dict[str, int] | str:
        detention = self.detentions.get(project)
        if detention is None:
            return "UNKNOWN_DETENTION"
        if detention.state == "CONFIRMED":
            return dict(detention.forfeited)
        if detention.state != "DETAINED":
            return "DETENTION_NOT_ACTIVE"
        if any(
            h.status == "NOTIFIED" and self.clock.now < h.deadline
            for h in detention.holders.values()
        ):
            return "REBUTTAL_PERIOD_OPEN"
        if any(s[0][2] == project for a in self.frozen for s in self.detained_in(a)):
            return "ACCOUNT_FROZEN"  # forfeiture does not override a court
        taken = {
            a: {s for s in self.detained_in(a) if s[0][2] == project}
            for a in self.accounts
            if self.types[a] not in RETIREMENT
        }
        for account_id, serials in taken.items():
            self.accounts[account_id] -= serials
            self.accounts[CANCELLATION] |= serials
        for holder in detention.holders.values():
            if holder.status in ("NOTIFIED", "UNDER_REVIEW"):
                holder.status = "FORFEITED"
        detention.state = "CONFIRMED"
        detention.issued_then = dict(self.issued)
        detention.forfeited = {a: len(s) for a, s in taken.items() if s}
        return dict(detention.forfeited)

    def holdings(self, account_id: str) -> dict[UC, tuple[Block, ...]]:
        serials = self.accounts[account_id]
        return {uc: runs(s for s in serials if s[0] == uc) for uc in {s[0] for s in serials}}


def reason_or(call: Callable[[], T], view: Callable[[T], V]) -> V | str:
    """The result of ``call`` as ``view`` shows it, or the reason of the error it raised."""
    try:
        return view(call())
    except RegistryError as error:
        return error.reason


class OriginMachine(RuleBasedStateMachine):
    """One example: a fresh registry on ``store`` and an ``OriginModel``."""

    def __init__(self, store: Store, stats: Counter[str]) -> None:
        super().__init__()
        self.store = store
        self.stats = stats
        self.clock = FakeClock()
        self.registry = store.open(self.clock)
        self.model = OriginModel(self.clock)
        self.ids = 0
        self.where: dict[Serial, str] = {}
        """Every serial detained after the previous step, and its account then."""
        self.forfeiting: str | None = None
        """The project the current step confirmed (its forfeiture may move detained units)."""

    def teardown(self) -> None:
        self.store.close(self.registry)

    def next_id(self, prefix: str) -> str:
        self.ids += 1
        return f"{prefix}-{self.ids}"

    def compare(self, label: str, observed: object, expected: object) -> None:
        assert observed == expected, f"{label}:\n  registry: {observed}\n  model:    {expected}"
        outcome = expected if isinstance(expected, str) else type(expected).__name__
        if isinstance(expected, tuple) and expected and isinstance(expected[0], str):
            outcome = f"{expected[0]} {expected[1]}".strip()
        self.stats[f"{label} {outcome}"] += 1

    # -- rules ----------------------------------------------------------------------

    @initialize(
        issues=st.lists(
            st.tuples(st.sampled_from(ORIGIN_CLASSES), st.integers(10, 40)), min_size=2, max_size=4
        )
    )
    def open_and_issue(self, issues: list[tuple[UC, int]]) -> None:
        for account_id, (account_type, code) in ORIGIN_ACCOUNTS.items():
            sector, province = ("POWER", "Shandong") if account_type == "COMPLIANCE" else ("", "")
            self.registry.open_account(
                REGULATOR,
                account_id,
                AccountType(account_type),
                Holder(f"{account_id} Co.", code, sector, province),
            )
        for project in PROJECTS:
            register_project(self.registry, project, "PRJ-A")
        for uc, quantity in [*issues, (("CCER", 2024, "P-A"), 20)]:
            self.issue(uc, quantity)
        # the project's owner may not give its units to another holder by its own transfer
        self.send_transfer("HOLDER_TRANSFER", "PRJ-A", "CMP-B", ("CCER", None, None), 1)

    @rule(uc=st.sampled_from(ORIGIN_CLASSES), quantity=st.integers(1, 30))
    def issue(self, uc: UC, quantity: int) -> None:
        expected = self.model.issue(uc, quantity)
        txn_id = self.next_id("ISS")
        observed = reason_or(
            lambda: self.registry.issue_units(
                REGULATOR, txn_id, unit_class(uc), quantity, "issuance"
            ),
            lambda r: (r.status.value, r.refusal_reason, tuple(block_of(b) for b in r.blocks)),
        )
        self.compare("ISSUANCE", observed, expected)

    @rule(data=st.data(), kind=st.sampled_from(["TRANSFER", "HOLDER_TRANSFER", "HOLDER_TRANSFER"]))
    def transfer(self, data: st.DataObject, kind: str) -> None:
        """A regulator's transfer (spreads the units) or a holder's own transfer: mostly
        of units the source holds (for a holder's, to one of its own accounts)."""
        accounts = self.model.accounts
        everyone = [*ORIGIN_ACCOUNTS, ISSUANCE]
        funded = [a for a in everyone if accounts[a]]
        if funded and data.draw(st.integers(0, 4), label="well chosen?") > 0:
            source = data.draw(st.sampled_from(funded), label="source")
            code = ORIGIN_ACCOUNTS.get(source, ("", ""))[1]
            own = [
                a
                for a, (t, c) in ORIGIN_ACCOUNTS.items()
                if a != source and c == code and code and t in OWNER_ACCOUNTS
            ]
            other = data.draw(st.integers(0, 3), label="another holder's?") == 0
            if kind == "HOLDER_TRANSFER" and own and not other:
                destination = data.draw(st.sampled_from(own), label="to")
            else:
                others = [a for a in ORIGIN_ACCOUNTS if a != source]
                destination = data.draw(st.sampled_from(others), label="to")
            classes = sorted({uc for uc, _ in accounts[source]})
            uc = data.draw(st.sampled_from(classes), label="class")
            sel = data.draw(
                st.sampled_from([(uc[0], None, None), (uc[0], uc[1], uc[2] or None)]),
                label="units",
            )
            have = sum(1 for u, _ in accounts[source] if matches(sel, u))
            quantity = data.draw(st.integers(1, have + 1), label="quantity")
        else:
            pair = data.draw(st.permutations(everyone), label="accounts")
            source, destination = pair[0], pair[1]
            sel = data.draw(st.sampled_from(ORIGIN_SELECTORS), label="units")
            quantity = data.draw(st.integers(1, 25), label="quantity")
        self.send_transfer(kind, source, destination, sel, quantity)

    def send_transfer(
        self, kind: str, source: str, destination: str, sel: Sel, quantity: int
    ) -> None:
        expected = self.model.move(kind, source, destination, sel, quantity)
        txn_id = self.next_id(kind[:3])
        if kind == "TRANSFER":
            principal, call = REGULATOR, self.registry.transfer
        else:
            principal, call = OPERATOR, self.registry.transfer_units
        observed = reason_or(
            lambda: call(
                principal, txn_id, source, destination, unit_selector(sel), quantity, "moved"
            ),
            lambda r: (r.status.value, r.refusal_reason, tuple(block_of(b) for b in r.blocks)),
        )
        self.compare(kind, observed, expected)

    @rule(project=st.sampled_from(PROJECTS), suspend=st.booleans())
    def suspend_or_reinstate(self, project: str, suspend: bool) -> None:
        expected = self.model.suspend(project, suspend)
        change = StatusChange("for the test", self.next_id("PRJ"))
        call = self.registry.projects.suspend if suspend else self.registry.projects.reinstate
        observed = reason_or(
            lambda: call(REGULATOR, project, change), lambda r: r.project.status.value
        )
        self.compare("SUSPEND" if suspend else "REINSTATE", observed, expected)

    @precondition(
        lambda self: any(
            d.state == "DETAINED" or p not in self.model.detentions
            for p in PROJECTS
            for d in [self.model.detentions.get(p, DetentionM(""))]
        )
    )
    @rule(data=st.data(), days=st.integers(1, 10))
    def detain(self, data: st.DataObject, days: int) -> None:
        """Detain a project not detained before (or one detained now: refused)."""
        project = data.draw(
            st.sampled_from(
                [
                    p
                    for p in PROJECTS
                    if p not in self.model.detentions
                    or self.model.detentions[p].state == "DETAINED"
                ]
            ),
            label="project",
        )
        reference = self.next_id("MEE-D")
        expected = self.model.detain(project, reference, days)
        observed = reason_or(
            lambda: self.registry.restrictions.detain_origin(
                REGULATOR, f"PROJECT:{project}", reference, "flagged", rebuttal_days=days
            ),
            lambda _: "DETAINED",
        )
        self.compare("DETAIN", observed, expected)
        holders = sorted(self.model.detentions[project].holders)
        if expected == "DETAINED" and holders and data.draw(st.booleans(), label="rebut now?"):
            self.submit_rebuttal(project, data.draw(st.sampled_from(holders), label="holder"))

    def draw_holder(self, data: st.DataObject, status: str) -> tuple[str, str]:
        """Mostly a holder of an active detention in ``status``, else anything."""
        good = sorted(
            (p, a)
            for p, d in self.model.detentions.items()
            if d.state == "DETAINED"
            for a, h in d.holders.items()
            if h.status == status and (status != "NOTIFIED" or h.deadline > self.clock.now)
        )
        if good and data.draw(st.integers(0, 3), label="well chosen?") > 0:
            return data.draw(st.sampled_from(good), label="holder")
        return (
            data.draw(st.sampled_from(PROJECTS), label="project"),
            data.draw(st.sampled_from(sorted(ORIGIN_ACCOUNTS)), label="account"),
        )

    @rule(data=st.data())
    def rebut(self, data: st.DataObject) -> None:
        self.submit_rebuttal(*self.draw_holder(data, "NOTIFIED"))

    def submit_rebuttal(self, project: str, account_id: str) -> None:
        expected = self.model.rebut(project, account_id)
        rebuttal_id = self.next_id("R")
        observed = reason_or(
            lambda: self.registry.origins.submit_rebuttal(
                OPERATOR, project, account_id, rebuttal_id, "audited supply chain", [DIGEST]
            ),
            lambda r: r.holder.status.value,
        )
        self.compare("REBUT", observed, expected)

    @rule(data=st.data())
    def clear_holder(self, data: st.DataObject) -> None:
        project, account_id = self.draw_holder(data, "UNDER_REVIEW")
        expected = self.model.clear_holder(project, account_id)
        observed = reason_or(
            lambda: self.registry.origins.clear_holder(
                REGULATOR, project, account_id, "audit report", "rebutted"
            ),
            lambda _: "CLEARED",
        )
        self.compare("CLEAR-HOLDER", observed, expected)

    @precondition(lambda self: any(d.state == "DETAINED" for d in self.model.detentions.values()))
    @rule(data=st.data())
    def clear_origin(self, data: st.DataObject) -> None:
        """Rarely: the whole detention lifted (its units move again)."""
        if data.draw(st.integers(0, 3), label="lift it?") > 0:
            return
        project = data.draw(
            st.sampled_from(
                sorted(p for p, d in self.model.detentions.items() if d.state == "DETAINED")
            ),
            label="project",
        )
        expected = self.model.clear_origin(project)
        observed = reason_or(
            lambda: self.registry.restrictions.clear_origin(
                REGULATOR, project, "investigation closed", "not flagged"
            ),
            lambda _: "CLEARED",
        )
        self.compare("CLEAR-ORIGIN", observed, expected)

    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        """Mostly a project detained (confirmed, cleared) before, else any."""
        detentions = self.model.detentions
        active = sorted(p for p, d in detentions.items() if d.state == "DETAINED")
        known = active or sorted(detentions)
        if known and data.draw(st.integers(0, 4), label="well chosen?") > 0:
            project = data.draw(st.sampled_from(known), label="project")
            holders = detentions[project].holders.values()
            last = max((h.deadline for h in holders), default=self.clock.now)
            wait = data.draw(st.integers(0, 2), label="wait it out?") == 0
            if last > self.clock.now and wait:
                self.clock.advance((last - self.clock.now).total_seconds())  # exactly
        else:
            project = data.draw(st.sampled_from(PROJECTS), label="project")
        expected = self.model.confirm(project)
        observed = reason_or(
            lambda: self.registry.origins.confirm(REGULATOR, project, "not rebutted"),
            lambda c: c.forfeited if not c.invalidated else c,
        )
        if isinstance(expected, dict):
            self.forfeiting = project
            if expected:
                self.stats["CONFIRM forfeited"] += 1
        self.compare("CONFIRM", observed, expected)

    @rule(
        account_id=st.sampled_from(sorted(ORIGIN_ACCOUNTS)),
        freeze=st.sampled_from([True, False, False]),
    )
    def freeze_or_unfreeze(self, account_id: str, freeze: bool) -> None:
        """A court freezes an account (its units stay put, detained ones are not
        forfeited) or lifts the freeze."""
        model = self.model
        if freeze == (account_id in model.frozen):
            expected = "ACCOUNT_STATE_UNCHANGED"
        else:
            (model.frozen.add if freeze else model.frozen.discard)(account_id)
            expected = "FROZEN" if freeze else "OPEN"
        change = self.registry.freeze_account if freeze else self.registry.unfreeze_account
        observed = reason_or(
            lambda: change(REGULATOR, account_id, "court order"),
            lambda r: r.account.state.value,
        )
        self.compare("FREEZE" if freeze else "UNFREEZE", observed, expected)

    @rule(days=st.sampled_from([1, 2, 5]))
    def advance_clock(self, days: int) -> None:
        """Days pass: rebuttal deadlines come and go."""
        self.clock.advance(days * DAY)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def registry_matches_model(self) -> None:
        """Holdings, detentions' holders and detained quantities; conservation; and
        detained serials stay put unless forfeited."""
        registry, model = self.registry, self.model
        if not model.issued:  # before the initialisation
            return
        assert_conserved(registry)
        where: dict[Serial, str] = {}
        for account_id in model.accounts:
            observed = {
                (h.unit_class.unit_type.value, h.unit_class.vintage, h.unit_class.project): tuple(
                    block_of(b) for b in h.blocks
                )
                for h in registry.get_holdings(account_id)
            }
            assert observed == model.holdings(account_id), (
                f"{account_id}:\n  registry: {observed}\n  model:    {model.holdings(account_id)}"
            )
            for blocks in observed.values():
                where.update(dict.fromkeys(serials_of(blocks), account_id))
            detained = Counter(
                "/".join(str(part) for part in uc if part)
                for uc, _ in model.detained_in(account_id)
            )
            restricted = registry.restrictions.restricted_quantities(account_id)
            assert restricted == {key: (n, 0) for key, n in detained.items()}, (
                f"{account_id}: restricted {restricted}, model detains {dict(detained)}"
            )
        for serial, before in self.where.items():
            now = where.get(serial)
            if now == before:
                continue
            project = serial[0][2]
            assert self.forfeiting == project and now == CANCELLATION, (
                f"detained {serial} moved from {before} to {now}"
            )
            reference = model.detentions[project].reference
            forfeiture = registry.get_transaction(REGULATOR.party, f"FORFEIT-{reference}-{before}")
            assert forfeiture.kind.value == "FORFEITURE", forfeiture
            assert serial in serials_of(block_of(b) for b in forfeiture.blocks), forfeiture
            self.stats["detained serial moved by FORFEITURE"] += 1
        self.forfeiting = None
        self.where = {s: a for s, a in where.items() if model.detained(s)}
        for project, detention in model.detentions.items():
            record = registry.store.find(OriginDetention.id_for(project), OriginDetention)
            assert record is not None
            holders = {
                h.account_id: HolderM(h.status.value, h.deadline, h.quantity)
                for h in record.notified
            }
            assert holders == detention.holders, (project, holders, detention.holders)
            if detention.state == "CONFIRMED":  # nothing uncleared of it is held anywhere
                left = [
                    (s, a)
                    for s, a in where.items()
                    if s[0][2] == project
                    and a not in (CANCELLATION, SURRENDER)
                    and s not in detention.cleared
                    and s[1] <= detention.issued_then.get(s[0], 0)
                ]
                assert not left, f"{project} confirmed, yet held: {left[:3]}"


# == the tests ======================================================================


def run_machine(store: Store, *, examples: int, steps: int) -> Counter[str]:
    """Run the machine on ``store``; return how often each outcome was compared."""
    stats: Counter[str] = Counter()

    class Machine(LedgerMachine):
        def __init__(self) -> None:
            super().__init__(store, stats)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            report_multiple_bugs=False,
        ),
    )
    return stats


def assert_exercised(
    stats: Counter[str], *, completed: Iterable[str], outcomes: Iterable[str]
) -> None:
    """Guard against a vacuous run: these kinds completed, these outcomes were compared.

    An outcome is the last word of a label: a refusal or error reason, or a status."""
    seen = {label for label, count in stats.items() if count}
    not_completed = [
        kind
        for kind in completed
        if not any(label.startswith(f"{kind} ") and "COMPLETED" in label for label in seen)
    ]
    not_seen = [o for o in outcomes if not any(label.split()[-1] == o for label in seen)]
    assert not not_completed and not not_seen, (
        f"never completed: {not_completed}; never seen: {not_seen}; seen: {sorted(seen)}"
    )


def test_ledger_matches_model_in_memory() -> None:
    stats = run_machine(MemoryStore(), examples=60, steps=40)
    assert_exercised(
        stats,
        completed=KINDS,
        outcomes=[
            "INSUFFICIENT_UNITS",
            "UNKNOWN_ACCOUNT",
            "MOVEMENT_NOT_ALLOWED",
            "UNITS_RETIRED",
            "TRANSACTION_NOT_REVERSIBLE",
            NOT_POSITIVE,
            SAME_ACCOUNT,
            TEWDC,
            "ACTIVE",
            "SETTLED",
        ],
    )


def test_ledger_matches_model_on_sqlite(tmp_path: Path) -> None:
    stats = run_machine(SqliteStore(tmp_path), examples=25, steps=30)
    assert_exercised(
        stats,
        completed=["ISSUANCE", "TRANSFER", "SETTLEMENT"],
        outcomes=["INSUFFICIENT_UNITS", "UNKNOWN_ACCOUNT", "ACTIVE"],
    )


@pytest.mark.postgres
def test_ledger_matches_model_on_postgres() -> None:
    with fresh_pg_database() as url:
        stats = run_machine(PostgresStore(url), examples=25, steps=30)
    assert_exercised(
        stats,
        completed=["ISSUANCE", "TRANSFER", "SETTLEMENT"],
        outcomes=["INSUFFICIENT_UNITS", "UNKNOWN_ACCOUNT", "ACTIVE"],
    )


def run_origin_machine(store: Store, *, examples: int, steps: int) -> Counter[str]:
    stats: Counter[str] = Counter()

    class Machine(OriginMachine):
        def __init__(self) -> None:
            super().__init__(store, stats)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            report_multiple_bugs=False,
            # Deterministic: the runs are short, and with random draws some missed a
            # rare outcome (CLEARED, FORFEITURE) that assert_exercised then reported
            # (2 in 10 runs); the same examples each run keep the check meaningful.
            derandomize=True,
            database=None,
        ),
    )
    return stats


def test_projects_transfers_and_detentions_match_model_in_memory() -> None:
    """Note: a confirmed project stays registered, so its issuance is accepted again
    after the confirmation (the model says so; the invariant judges the units issued
    until then). Whether that should be refused is a question for the lead."""
    stats = run_origin_machine(MemoryStore(), examples=40, steps=30)
    assert_exercised(
        stats,
        completed=["ISSUANCE", "TRANSFER", "HOLDER_TRANSFER"],
        outcomes=[
            "DIFFERENT_HOLDER",
            "PROJECT_SUSPENDED",
            "ORIGIN_DETAINED",
            "UNDER_REVIEW",
            "CLEARED",
            "forfeited",
            "FORFEITURE",
        ],
    )


@pytest.mark.postgres
def test_projects_transfers_and_detentions_match_model_on_postgres() -> None:
    with fresh_pg_database() as url:
        stats = run_origin_machine(PostgresStore(url), examples=8, steps=25)
    assert_exercised(
        stats,
        completed=["ISSUANCE"],
        outcomes=["DETAINED", "FORFEITURE"],
    )

"""Workers for the concurrency tests: a random mix of movements on a few shared accounts.

Each worker records every result it was acknowledged, so that the test can check them
against what the store holds afterwards. The module is importable on its own, so that
``multiprocessing`` (spawn) can run :func:`process_main` in a fresh interpreter.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from multiprocessing.synchronize import Barrier as ProcessBarrier
from multiprocessing.synchronize import Lock as ProcessLock
from pathlib import Path
from typing import Any, TypeVar

from registry.application import Registry, Trade, TradeOutcome, TradeResult, TransactionResult
from registry.application.projects import StatusChange
from registry.application.results import HoldResult
from registry.bootstrap import build_registry
from registry.domain.accounts import NATIONAL_ACCOUNTS, AccountType, Holder
from registry.domain.errors import ConcurrencyConflict
from registry.domain.holds import HoldStatus
from registry.domain.projects import ProjectDetails
from registry.domain.transactions import Principal
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from registry.settings import Settings

T = TypeVar("T")

REGULATOR = Principal("mee", "regulator")
EXCHANGE = Principal("exchange", "settlement")
ISSUANCE = NATIONAL_ACCOUNTS[AccountType.ISSUANCE]

ACCOUNTS = ("TRD-CC-01", "TRD-CC-02", "TRD-CC-03", "TRD-CC-04", "TRD-CC-05")
CEA_2024 = UnitClass(UnitType.CEA, 2024)
CEA_2025 = UnitClass(UnitType.CEA, 2025)
CCER_0042 = UnitClass(UnitType.CCER, 2024, "CCER-2024-0042")
CLASSES = (CEA_2024, CEA_2025, CCER_0042)
PROJECT_OWNER = "PRJ-CC-01"
"""The PROJECT account CCER_0042's project is registered to: where its issuance lands."""


def issued_into(unit_class: UnitClass) -> str:
    """Allowances are issued into the issuance account, offsets to their project's owner."""
    return PROJECT_OWNER if unit_class.unit_type is UnitType.CCER else ISSUANCE


SEED_PER_ACCOUNT = 300
"""Units of every class each shared account starts with."""
RESERVE = 600
"""Units of every class left in the issuance account, for top-ups during the run."""

# (unit type, vintage) a trade or hold may name: any CEA (oldest first), one vintage, CCER.
SELECTIONS: tuple[tuple[str, int | None], ...] = (
    ("CEA", None),
    ("CEA", 2024),
    ("CEA", 2025),
    ("CCER", None),
)
MAX_CONFLICT_RETRIES = 8
MAX_ERROR_RETRIES = 3

BlockKey = tuple[str, int, int]


def block_keys(blocks: Iterable[SerialBlock]) -> tuple[BlockKey, ...]:
    return tuple((b.unit_class.key, b.first, b.last) for b in blocks)


def selector_of(unit_type: str, vintage: int | None) -> UnitSelector:
    return UnitSelector(UnitType(unit_type), vintage)


def seed_registry(registry: Registry) -> dict[str, int]:
    """Open the shared accounts and fund them; returns the units issued per class key."""
    for account_id in ACCOUNTS:
        registry.open_account(
            REGULATOR, account_id, AccountType.TRADING, Holder(f"{account_id} Trading Ltd")
        )
    registry.open_account(
        REGULATOR, PROJECT_OWNER, AccountType.PROJECT, Holder("Concurrency Wind Co.")
    )
    registry.projects.register(
        REGULATOR,
        CCER_0042.project,
        ProjectDetails(
            owner_account=PROJECT_OWNER,
            province="Gansu",
            methodology="CCER-14-001-V01",
            sector="WIND",
            verifier="China Quality Certification Centre",
            developer="Concurrency Wind Co.",
            crediting_start=date(2020, 1, 1),
            crediting_end=date(2029, 12, 31),
        ),
        StatusChange("seed for the concurrency test", "REG-0042"),
    )
    issued = {}
    for unit_class in CLASSES:
        quantity = SEED_PER_ACCOUNT * len(ACCOUNTS) + RESERVE
        result = registry.issue_units(
            REGULATOR,
            f"SEED-ISS-{unit_class.key.replace('/', '-')}",
            unit_class,
            quantity,
            "seed for the concurrency test",
        )
        assert result.ok, result
        issued[unit_class.key] = quantity
        selector = UnitSelector(
            unit_class.unit_type, unit_class.vintage, unit_class.project or None
        )
        for account_id in ACCOUNTS:
            moved = registry.transfer(
                REGULATOR,
                f"SEED-{account_id}-{unit_class.key.replace('/', '-')}",
                issued_into(unit_class),
                account_id,
                selector,
                SEED_PER_ACCOUNT,
                "seed",
            )
            assert moved.ok, moved
    return issued


@dataclass(frozen=True)
class Ack:
    """One transaction result a worker was given (possibly a replay)."""

    op: str
    party: str
    transaction_id: str
    kind: str
    status: str
    source: str | None
    destination: str | None
    blocks: tuple[BlockKey, ...]
    replayed: bool
    refusal_reason: str = ""

    @property
    def quantity(self) -> int:
        return sum(last - first + 1 for _, first, last in self.blocks)

    @classmethod
    def of(cls, op: str, result: TransactionResult) -> Ack:
        return cls(
            op,
            result.party,
            result.transaction_id,
            result.kind.value,
            result.status.value,
            result.source,
            result.destination,
            block_keys(result.blocks),
            result.replayed,
            result.refusal_reason,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ack:
        return cls(**{**data, "blocks": tuple(tuple(b) for b in data["blocks"])})


@dataclass(frozen=True)
class HoldAck:
    """A hold a worker placed, and how the worker ended it (SETTLED or RELEASED)."""

    party: str
    hold_id: str
    account_id: str
    status: str
    quantity: int
    blocks: tuple[BlockKey, ...]
    ended_as: str = ""
    settled_by: str = ""
    settled_quantity: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HoldAck:
        return cls(**{**data, "blocks": tuple(tuple(b) for b in data["blocks"])})


@dataclass
class WorkerReport:
    worker: str
    acks: list[Ack] = field(default_factory=list)
    holds: list[HoldAck] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    """ConcurrencyConflict raised to the worker (each followed by a retry, same id)."""
    abandoned: list[str] = field(default_factory=list)
    """Commands never acknowledged: still conflicting after every retry."""
    errors: list[str] = field(default_factory=list)
    """Anything unexpected: exceptions, replays that disagree with the first answer."""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "acks": [asdict(a) for a in self.acks],
            "holds": [asdict(h) for h in self.holds],
            "ops": dict(self.ops),
            "conflicts": self.conflicts,
            "abandoned": self.abandoned,
            "errors": self.errors,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerReport:
        return cls(
            data["worker"],
            [Ack.from_json(a) for a in data["acks"]],
            [HoldAck.from_json(h) for h in data["holds"]],
            Counter(data["ops"]),
            data["conflicts"],
            list(data["abandoned"]),
            list(data["errors"]),
            data["seconds"],
        )


class _Abandoned(Exception):
    pass


class Worker:
    """Random transfers, trades, batches and holds on the shared accounts."""

    def __init__(self, registry: Registry, name: str, seed: int) -> None:
        self.registry = registry
        self.name = name
        self.rng = random.Random(seed)
        self.report = WorkerReport(name)
        self.counter = 0
        self.party = EXCHANGE
        self.broker = Principal(f"broker-{name.lower()}", "desk")
        # Commands already acknowledged, to send again: (first ack, resend).
        self.sent: list[tuple[Ack, Callable[[], TransactionResult]]] = []

    # -- plumbing ---------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{self.name}-{prefix}-{self.counter:04d}"

    def _call(self, what: str, command: Callable[[], T]) -> T:
        """Run ``command`` until it answers, as a client would: resend it unchanged (same
        ids) after a ConcurrencyConflict, and after any other failure, which is also
        recorded as a finding (the client cannot tell whether anything was stored)."""
        conflicts = failures = 0
        while conflicts < MAX_CONFLICT_RETRIES and failures < MAX_ERROR_RETRIES:
            try:
                return command()
            except ConcurrencyConflict:
                conflicts += 1
                self.report.conflicts += 1
                time.sleep(self.rng.uniform(0, 0.05))
            except Exception as error:
                failures += 1
                self.report.errors.append(f"{what}: {type(error).__name__}: {error}")
        self.report.abandoned.append(what)
        raise _Abandoned(what)

    def _ack(
        self,
        op: str,
        result: TransactionResult,
        resend: Callable[[], TransactionResult] | None = None,
    ) -> Ack:
        ack = Ack.of(op, result)
        self.report.acks.append(ack)
        if resend is not None and not result.replayed:
            self.sent.append((ack, resend))
        return ack

    def _ack_batch(self, trades: list[Trade], results: list[TradeResult]) -> None:
        if len(results) != len(trades):
            self.report.errors.append(f"batch of {len(trades)} answered {len(results)}")
        for trade, result in zip(trades, results, strict=False):
            if result.trade_id != trade.trade_id:
                self.report.errors.append(
                    f"batch answer for {result.trade_id} in the place of {trade.trade_id}"
                )
            if result.transaction is None or result.outcome is TradeOutcome.REJECTED:
                self.report.errors.append(f"trade {trade.trade_id} rejected: {result}")
                continue
            self._ack("batch", result.transaction, self._resend_trade(trade))

    def _resend_trade(self, trade: Trade) -> Callable[[], TransactionResult]:
        return lambda: self.registry.settle_trade(self.party, trade)

    def _pair(self) -> tuple[str, str]:
        source, destination = self.rng.sample(ACCOUNTS, 2)
        return source, destination

    def _trade(
        self,
        seller: str | None = None,
        quantity: int | None = None,
        hold: tuple[str, str, int | None] | None = None,
    ) -> Trade:
        source, buyer = self._pair()
        if seller is not None:
            buyer = self.rng.choice([a for a in ACCOUNTS if a != seller])
            source = seller
        unit_type, vintage = self.rng.choice(SELECTIONS)
        hold_id = None
        if hold is not None:
            hold_id, unit_type, vintage = hold
        return Trade(
            self._id("TRD"),
            source,
            buyer,
            unit_type,
            quantity or self.rng.randint(1, 120),
            vintage,
            hold_id=hold_id,
        )

    # -- operations ---------------------------------------------------------------

    def run(self, operations: int) -> WorkerReport:
        started = time.monotonic()
        ops: list[tuple[str, Callable[[], None]]] = [
            ("transfer", self.transfer),
            ("trade", self.trade),
            ("batch", self.batch),
            ("hold", self.hold),
            ("issue", self.issue),
            ("replay", self.replay),
        ]
        weights = [24, 24, 18, 22, 4, 8]
        for _ in range(operations):
            name, op = self.rng.choices(ops, weights)[0]
            self.report.ops[name] += 1
            try:
                op()
            except _Abandoned:
                pass
            except Exception as error:  # anything else is a finding: keep going, report it
                self.report.errors.append(f"{name}: {type(error).__name__}: {error}")
        self.report.seconds = time.monotonic() - started
        return self.report

    def transfer(self) -> None:
        source, destination = self._pair()
        unit_type, vintage = self.rng.choice(SELECTIONS)
        txn_id = self._id("TRF")
        quantity = self.rng.randint(1, 120)

        def send() -> TransactionResult:
            return self.registry.transfer(
                self.broker,
                txn_id,
                source,
                destination,
                selector_of(unit_type, vintage),
                quantity,
                "bilateral transfer",
            )

        self._ack("transfer", self._call(txn_id, send), send)

    def trade(self) -> None:
        trade = self._trade()
        send = self._resend_trade(trade)
        self._ack("trade", self._call(trade.trade_id, send), send)

    def batch(self) -> None:
        trades = [self._trade() for _ in range(self.rng.randint(2, 4))]
        roll = self.rng.random()
        if roll < 0.15:
            trades.append(trades[0])  # the same trade twice in one batch: a replay
        elif roll < 0.3:
            earlier = [a for a, _ in self.sent if a.op in ("trade", "batch", "hold-trade")]
            if earlier:
                # an earlier trade again: the store answers it, nothing moves twice
                self.report.ops["batch-with-earlier-trade"] += 1
                self.rng.shuffle(trades)
                trades.insert(0, self._trade_of(self.rng.choice(earlier)))
        results = self._call(
            f"batch {trades[0].trade_id}", lambda: self.registry.settle_trades(self.party, trades)
        )
        self._ack_batch(trades, results)

    def _trade_of(self, ack: Ack) -> Trade:
        txn = self.registry.get_transaction(ack.party, ack.transaction_id)
        details = txn.details
        selector = details["selector"]
        assert txn.source is not None and txn.destination is not None
        return Trade(
            ack.transaction_id,
            txn.source,
            txn.destination,
            selector["unit_type"],
            details["quantity"],
            selector["vintage"],
            hold_id=details.get("hold_id"),
        )

    def hold(self) -> None:
        account = self.rng.choice(ACCOUNTS)
        unit_type, vintage = self.rng.choice(SELECTIONS)
        hold_id = self._id("HLD")
        quantity = self.rng.randint(1, 100)
        placed = self._call(
            hold_id,
            lambda: self.registry.place_hold(
                self.party, hold_id, account, selector_of(unit_type, vintage), quantity, 3600
            ),
        )
        record = HoldAck(
            placed.party,
            placed.hold_id,
            placed.account_id,
            placed.status.value,
            placed.quantity,
            block_keys(placed.blocks),
        )
        if placed.status is not HoldStatus.ACTIVE:
            self.report.holds.append(record)
            return
        roll = self.rng.random()
        try:
            if roll < 0.45:
                trade = self._trade(
                    account, self.rng.randint(1, quantity), (hold_id, unit_type, vintage)
                )
                send = self._resend_trade(trade)
                ack = self._ack("hold-trade", self._call(trade.trade_id, send), send)
                record = self._settled(record, ack)
            elif roll < 0.65:
                trade = self._trade(
                    account, self.rng.randint(1, quantity), (hold_id, unit_type, vintage)
                )
                trades = [self._trade(), trade, self._trade()]
                results = self._call(
                    f"batch {trade.trade_id}",
                    lambda: self.registry.settle_trades(self.party, trades),
                )
                self._ack_batch(trades, results)
                ack = next(
                    a for a in reversed(self.report.acks) if a.transaction_id == trade.trade_id
                )
                record = self._settled(record, ack)
            else:
                released = self._release(hold_id)
                record = self._released(record, released)
        finally:
            self.report.holds.append(record)

    def _settled(self, record: HoldAck, ack: Ack) -> HoldAck:
        if ack.status != "COMPLETED":
            self.report.errors.append(
                f"settlement {ack.transaction_id} against active hold "
                f"{record.hold_id} refused: {ack.refusal_reason}"
            )
            return record
        return HoldAck(
            **{
                **asdict(record),
                "blocks": record.blocks,
                "ended_as": "SETTLED",
                "settled_by": ack.transaction_id,
                "settled_quantity": ack.quantity,
            }
        )

    def _release(self, hold_id: str) -> HoldResult:
        released = self._call(
            f"release {hold_id}", lambda: self.registry.release_hold(self.party, hold_id, "cancel")
        )
        again = self._call(
            f"release {hold_id} again",
            lambda: self.registry.release_hold(self.party, hold_id, "cancel"),
        )
        if not again.replayed or again.status is not HoldStatus.RELEASED:
            self.report.errors.append(f"second release of {hold_id}: {again}")
        return released

    def _released(self, record: HoldAck, released: HoldResult) -> HoldAck:
        if released.status is not HoldStatus.RELEASED:
            self.report.errors.append(f"release of {record.hold_id} answered {released}")
            return record
        if block_keys(released.blocks) != record.blocks and not released.replayed:
            self.report.errors.append(
                f"release of {record.hold_id} gave back "
                f"{block_keys(released.blocks)}, held {record.blocks}"
            )
        return HoldAck(**{**asdict(record), "blocks": record.blocks, "ended_as": "RELEASED"})

    def issue(self) -> None:
        """New units (into the issuance account, or the project owner's), then some of
        what is there to an account."""
        unit_class = self.rng.choice(CLASSES)
        quantity = self.rng.randint(1, 50)
        issue_id = self._id("ISS")

        def issue() -> TransactionResult:
            return self.registry.issue_units(REGULATOR, issue_id, unit_class, quantity, "top-up")

        self._ack("issue", self._call(issue_id, issue), issue)
        txn_id = self._id("DLV")
        destination = self.rng.choice(ACCOUNTS)
        selector = UnitSelector(
            unit_class.unit_type, unit_class.vintage, unit_class.project or None
        )
        amount = self.rng.randint(1, 80)
        source = issued_into(unit_class)

        def deliver() -> TransactionResult:
            return self.registry.transfer(
                REGULATOR, txn_id, source, destination, selector, amount, "delivery"
            )

        self._ack("deliver", self._call(txn_id, deliver), deliver)

    def replay(self) -> None:
        """Send an acknowledged command again: same answer, marked replayed, nothing moves."""
        if not self.sent:
            return
        first, resend = self.rng.choice(self.sent)
        again = self._ack("replay", self._call(f"replay {first.transaction_id}", resend))
        if not again.replayed or (again.status, again.blocks) != (first.status, first.blocks):
            self.report.errors.append(
                f"replay of {first.transaction_id} answered {again}, first {first}"
            )


def process_main(
    url: str,
    name: str,
    seed: int,
    operations: int,
    startup: ProcessLock,
    barrier: ProcessBarrier,
    out_path: str,
) -> None:
    """Entry point of one OS process: its own Registry on the shared database.

    Registries are built one at a time (``startup``): built at the same instant they can
    fail with "tuple concurrently updated" (see the startup test); the work itself starts
    at the same instant for every process (``barrier``)."""
    with startup:
        registry = build_registry(Settings(url, pool_size=2))
    try:
        barrier.wait(timeout=30)
        report = Worker(registry, name, seed).run(operations)
    finally:
        registry.close()
    Path(out_path).write_text(json.dumps(report.to_json()))

"""The NET_SALES carry-over limit's two figures, as the write side knows them: the
company's net sales of allowances over the rule's period, and the carried tonnes it
has already surrendered under the same limit.

Source: MEE, 2023-2024 allowance cap and allocation plan, power (15 October 2024):
allowances of 2019-2024 may be carried over to later years up to 1.5 x the company's
net sales over the period + 10,000 t (``docs/compliance.md``). The limit is one pool
per company for every later year, so what a surrender for one year took of it is gone
for the next, and comes back only when that surrender is reversed.

Net sales are computed here from the transactions an account's own events name (read
by ``registry.persistence.account_history``), with the read model's definition
(``registry.readmodels.queries.ReadModels.net_sales``): CEA moved out of the account by
exchange settlement minus CEA moved in, recorded in the period; a reversed settlement
is not netted out. Nothing is written on the settlement path for it: the figure is
read only when a surrender of carried vintages meets a NET_SALES rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.ids import NAMESPACE
from registry.domain.rules import ComplianceRules
from registry.domain.transactions import Transaction, TransactionKind
from registry.domain.units import SerialBlock, UnitClass, UnitType

SETTLEMENT = TransactionKind.SETTLEMENT.value
SURRENDER = TransactionKind.SURRENDER.value


@dataclass(frozen=True, slots=True)
class RecordedTransaction:
    """What the carry-over limit needs of one recorded transaction (completed)."""

    id: UUID
    kind: str
    source: str | None
    destination: str | None
    blocks: tuple[tuple[str, int, int], ...]
    """(unit class key, first serial, last serial), as stored."""
    recorded_at: datetime
    """When it was recorded (its creation event's time; the read model's
    ``recorded_at``)."""
    compliance_year: int | None = None
    reversed: bool = False

    @classmethod
    def of(cls, txn: Transaction) -> RecordedTransaction:
        year = txn.details.get("compliance_year")
        return cls(
            txn.id,
            txn.kind_name,
            txn.source,
            txn.destination,
            tuple((b.unit_class.key, b.first, b.last) for b in txn.blocks),
            txn.created_on,
            None if year is None else int(year),
            txn.reversed_by is not None,
        )


@lru_cache(maxsize=1024)
def _unit_class(key: str) -> UnitClass:
    return UnitClass.from_key(key)


def carried_tonnes(
    rules: ComplianceRules, year: int, blocks: Iterable[SerialBlock | tuple[str, int, int]]
) -> int:
    """Allowances among ``blocks`` of a vintage the year's carry-over rule limits."""
    total = 0
    for block in blocks:
        if isinstance(block, SerialBlock):
            unit_class, tonnes = block.unit_class, block.quantity
        else:
            unit_class, tonnes = _unit_class(block[0]), block[2] - block[1] + 1
        if unit_class.unit_type is UnitType.CEA and rules.carried_vintage(unit_class.vintage, year):
            total += tonnes
    return total


def net_sales(
    account_id: str, transactions: Iterable[RecordedTransaction], since: datetime, until: datetime
) -> int:
    """CEA ``account_id`` sold net by exchange settlement recorded in [since, until):
    tonnes settled out minus tonnes settled in (negative: it bought more). Recorded
    means the transaction's recording time, as the read model's ``recorded_at``."""
    total = 0
    for txn in transactions:
        if txn.kind != SETTLEMENT or not since <= txn.recorded_at < until:
            continue
        tonnes = sum(
            last - first + 1
            for key, first, last in txn.blocks
            if _unit_class(key).unit_type is UnitType.CEA
        )
        if txn.source == account_id:
            total += tonnes
        if txn.destination == account_id:
            total -= tonnes
    return total


def past_carried_surrenders(
    account_id: str,
    transactions: Iterable[RecordedTransaction],
    rules_of_year: dict[int, ComplianceRules],
) -> list[tuple[UUID, int, str, int]]:
    """(transaction id, year, pool, carried tonnes) of the account's surrenders still in
    force whose year's rules (``rules_of_year``) draw on a carry-over pool: what a
    store written before carried tonnes were recorded has used, computed from the
    surrendered blocks."""
    found = []
    for txn in transactions:
        if txn.kind != SURRENDER or txn.reversed or txn.source != account_id:
            continue
        year = txn.compliance_year
        rules = rules_of_year.get(year) if year is not None else None
        scope = rules.carry_over_scope if rules is not None else None
        if year is None or rules is None or scope is None:
            continue
        tonnes = carried_tonnes(rules, year, txn.blocks)
        if tonnes:
            found.append((txn.id, year, scope, tonnes))
    return found


class CarryOverUse(Aggregate):
    """One compliance account's carried tonnes surrendered under NET_SALES limits, by
    pool (``ComplianceRules.carry_over_scope``) and by the surrender that took them:
    the limit's ``carried_before`` is one look-up, and a reversal gives back exactly
    what its surrender took."""

    TOPIC = "registry.CarryOverUse"

    def __init__(self) -> None:
        self.account_id = ""
        self.surrenders: dict[str, dict[str, Any]] = {}
        """Transaction id (text) -> {"year", "scope", "tonnes"}, for those in force."""

    @staticmethod
    def id_for(account_id: str) -> UUID:
        return uuid5(NAMESPACE, f"carry-over:{account_id}")

    class Created(Aggregate.Created):
        TOPIC = "registry.CarryOverUse.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.CarryOverUse.Started"
        account_id: str

        def apply(self, use: CarryOverUse) -> None:
            use.account_id = self.account_id

    class CarriedSurrendered(Aggregate.Event):
        """A surrender took ``tonnes`` of carried vintages from the pool ``scope``;
        ``from_history``: a surrender made before these were recorded, counted from its
        blocks when the account's first record was made."""

        TOPIC = "registry.CarryOverUse.CarriedSurrendered"
        transaction_id: UUID
        year: int
        scope: str
        tonnes: int
        from_history: bool

        def apply(self, use: CarryOverUse) -> None:
            use.surrenders = {
                **use.surrenders,
                str(self.transaction_id): {
                    "year": self.year,
                    "scope": self.scope,
                    "tonnes": self.tonnes,
                },
            }

    class CarriedReturned(Aggregate.Event):
        """The surrender was reversed: its carried tonnes are back in the pool."""

        TOPIC = "registry.CarryOverUse.CarriedReturned"
        transaction_id: UUID
        reversal_id: UUID
        tonnes: int

        def apply(self, use: CarryOverUse) -> None:
            surrenders = dict(use.surrenders)
            surrenders.pop(str(self.transaction_id), None)
            use.surrenders = surrenders

    @classmethod
    def start(cls, account_id: str) -> CarryOverUse:
        return cls._create(cls.Started, id=cls.id_for(account_id), account_id=account_id)

    def used(self, scope: str) -> int:
        """Carried tonnes surrendered from the pool and not reversed."""
        return sum(s["tonnes"] for s in self.surrenders.values() if s["scope"] == scope)

    def record(
        self, transaction_id: UUID, year: int, scope: str, tonnes: int, from_history: bool = False
    ) -> bool:
        """Count a surrender's carried tonnes against its pool; the same surrender again
        changes nothing (False)."""
        if not tonnes or str(transaction_id) in self.surrenders:
            return False
        self.trigger_event(
            self.CarriedSurrendered,
            transaction_id=transaction_id,
            year=year,
            scope=scope,
            tonnes=tonnes,
            from_history=from_history,
        )
        return True

    def give_back(self, transaction_id: UUID, reversal_id: UUID) -> int:
        """A reversed surrender's carried tonnes, back in the pool (0: it took none)."""
        taken = self.surrenders.get(str(transaction_id))
        if taken is None:
            return 0
        self.trigger_event(
            self.CarriedReturned,
            transaction_id=transaction_id,
            reversal_id=reversal_id,
            tonnes=taken["tonnes"],
        )
        return int(taken["tonnes"])

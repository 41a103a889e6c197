"""Projections: each turns a batch of logged events into row changes of its tables.

A projection is given a whole batch at once so that it can add up deltas in memory and
write each row once per batch: catch-up speed comes from few statements per event.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import Column, Connection, MetaData, Table, and_, delete, insert, select, update

from registry.domain.accounts import Account, AccountType
from registry.domain.transactions import Transaction
from registry.domain.units import SerialBlock
from registry.readmodels import tables as t
from registry.readmodels.sql import upsert_add

Event = Any
Batch = Sequence[tuple[int, Event]]


class AccountDirectory:
    """Account uuid -> (account id, type): immutable facts, cached for the process."""

    def __init__(self, load: Any) -> None:
        self._load = load
        self._known: dict[UUID, tuple[str, AccountType]] = {}

    def learn(self, event: Event) -> None:
        if isinstance(event, Account.Opened):
            self._known[event.originator_id] = (event.account_id,
                                                AccountType(event.account_type))

    def __getitem__(self, account_uuid: UUID) -> tuple[str, AccountType]:
        if account_uuid not in self._known:
            account = self._load(account_uuid)
            self._known[account_uuid] = (account.account_id, account.account_type)
        return self._known[account_uuid]


class Projection(ABC):
    """Writes the rows of its ``tables``; bound to the live tables, or to shadow copies
    (same columns, name + suffix) when it is being rebuilt from position zero."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]

    def __init__(self, directory: AccountDirectory, suffix: str = "") -> None:
        self.directory = directory
        self.suffix = suffix
        self.bound: dict[str, Table] = {
            table.name: shadow_table(table, suffix) if suffix else table
            for table in self.tables}

    @property
    def tracking_name(self) -> str:
        return self.name + self.suffix

    def table(self, live: Table) -> Table:
        return self.bound[live.name]

    @abstractmethod
    def apply(self, conn: Connection, batch: Batch) -> None:
        """Write the row changes for ``batch`` (the caller commits them with tracking)."""


def shadow_table(table: Table, suffix: str) -> Table:
    """A copy of ``table`` named ``<name><suffix>``, with its primary key but no other
    index (index names are global; the swap recreates them under their own names)."""
    columns = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in table.columns]
    return Table(table.name + suffix, MetaData(), *columns, comment=table.comment)


def blocks_json(blocks: Iterable[SerialBlock]) -> str:
    return json.dumps([[b.unit_class.key, b.first, b.last] for b in blocks])


def quantity(blocks: Iterable[SerialBlock]) -> int:
    return sum(b.quantity for b in blocks)


@dataclass
class _Delta:
    total: int = 0
    held: int = 0


def account_deltas(event: Event) -> list[tuple[UUID, SerialBlock, int, int]]:
    """(account, block, change of total, change of held) for an account event."""
    account = event.originator_id
    if isinstance(event, Account.Credited):
        return [(account, b, b.quantity, 0) for b in event.blocks]
    if isinstance(event, Account.Debited):
        return [(account, b, -b.quantity, 0) for b in event.blocks]
    if isinstance(event, Account.UnitsHeld):
        return [(account, b, 0, b.quantity) for b in event.blocks]
    if isinstance(event, Account.HoldReleased):
        return [(account, b, 0, -b.quantity) for b in event.blocks]
    if isinstance(event, Account.HeldUnitsDebited):
        return ([(account, b, -b.quantity, -b.quantity) for b in event.blocks]
                + [(account, b, 0, -b.quantity) for b in event.released])
    return []


class AccountsProjection(Projection):
    name = "accounts"
    tables = (t.accounts,)

    def apply(self, conn: Connection, batch: Batch) -> None:
        states = {Account.Frozen: "FROZEN", Account.Unfrozen: "OPEN", Account.Closed: "CLOSED"}
        for position, event in batch:
            if isinstance(event, Account.Opened):
                holder = event.holder
                conn.execute(insert(self.table(t.accounts)).values(
                    account_id=event.account_id, account_uuid=str(event.originator_id),
                    account_type=event.account_type, state="OPEN",
                    holder_name=holder.get("name", ""),
                    credit_code=holder.get("credit_code", ""),
                    sector=holder.get("sector", ""), province=holder.get("province", ""),
                    opened_at=event.timestamp, position=position))
            elif type(event) in states:
                conn.execute(update(self.table(t.accounts))
                             .where(self.table(t.accounts).c.account_uuid
                                    == str(event.originator_id))
                             .values(state=states[type(event)], position=position))


class HoldingsProjection(Projection):
    name = "holdings"
    tables = (t.holdings,)

    def apply(self, conn: Connection, batch: Batch) -> None:
        deltas: dict[tuple[str, str], _Delta] = defaultdict(_Delta)
        classes = {}
        for _, event in batch:
            for account, block, d_total, d_held in account_deltas(event):
                key = (self.directory[account][0], block.unit_class.key)
                classes[key[1]] = block.unit_class
                deltas[key].total += d_total
                deltas[key].held += d_held
        upsert_add(conn, self.table(t.holdings), ["account_id", "unit_class"], [
            {"account_id": account_id, "unit_class": key,
             "unit_type": classes[key].unit_type.value, "vintage": classes[key].vintage,
             "project": classes[key].project, "total": d.total, "held": d.held,
             "available": d.total - d.held}
            for (account_id, key), d in deltas.items()
        ], add=["total", "held", "available"])


class SupplyProjection(Projection):
    name = "supply"
    tables = (t.supply, t.issued)

    def apply(self, conn: Connection, batch: Batch) -> None:
        deltas: dict[tuple[str, str], _Delta] = defaultdict(_Delta)
        issued: dict[str, list[int]] = {}
        for _, event in batch:
            if isinstance(event, Transaction.Completed) and event.kind == "ISSUANCE":
                for block in event.blocks:
                    counts = issued.setdefault(block.unit_class.key, [0, 1])
                    counts[0] += block.quantity
                    counts[1] = max(counts[1], block.last + 1)
            for account, block, d_total, d_held in account_deltas(event):
                key = (block.unit_class.key, self.directory[account][1].value)
                deltas[key].total += d_total
                deltas[key].held += d_held
        upsert_add(conn, self.table(t.supply), ["unit_class", "account_type"], [
            {"unit_class": unit_class, "account_type": account_type, "total": d.total,
             "held": d.held}
            for (unit_class, account_type), d in deltas.items()
        ], add=["total", "held"])
        upsert_add(conn, self.table(t.issued), ["unit_class"], [
            {"unit_class": key, "issued": counts[0], "next_serial": counts[1]}
            for key, counts in issued.items()
        ], add=["issued"], replace=["next_serial"])


class TransactionsProjection(Projection):
    name = "transactions"
    tables = (t.transactions,)

    def __init__(self, directory: AccountDirectory, find_transaction: Any,
                 suffix: str = "") -> None:
        super().__init__(directory, suffix)
        self.find_transaction = find_transaction

    def apply(self, conn: Connection, batch: Batch) -> None:
        rows = []
        reversals = []
        for position, event in batch:
            if isinstance(event, (Transaction.Completed, Transaction.Refused)):
                blocks = list(getattr(event, "blocks", []))
                rows.append({
                    "party": event.party, "client_id": event.client_id, "kind": event.kind,
                    "status": "COMPLETED" if isinstance(event, Transaction.Completed)
                    else "REFUSED",
                    "source": event.source, "destination": event.destination,
                    "quantity": quantity(blocks), "blocks": blocks_json(blocks),
                    "reason": event.reason, "principal": event.principal,
                    "refusal_reason": getattr(event, "refusal_reason", ""),
                    "refusal_message": getattr(event, "refusal_message", ""),
                    "details": json.dumps(event.details, sort_keys=True),
                    "reversed_by": None, "recorded_at": event.timestamp,
                    "position": position})
            elif isinstance(event, Transaction.Reversed):
                reversals.append(event)
        if rows:
            conn.execute(insert(self.table(t.transactions)), rows)
        for event in reversals:
            original = self.find_transaction(event.originator_id)
            reversal = self.find_transaction(event.reversal_id)
            conn.execute(update(self.table(t.transactions)).where(and_(
                self.table(t.transactions).c.party == original.party,
                self.table(t.transactions).c.client_id == original.client_id,
            )).values(reversed_by=f"{reversal.party}:{reversal.client_id}"))


class HistoryProjection(Projection):
    """One row per account, unit class and direction of every completed movement."""

    name = "history"
    tables = (t.history,)

    def apply(self, conn: Connection, batch: Batch) -> None:
        rows = []
        for position, event in batch:
            if not isinstance(event, Transaction.Completed):
                continue
            by_class: dict[str, list[SerialBlock]] = defaultdict(list)
            for block in event.blocks:
                by_class[block.unit_class.key].append(block)
            sides = [("CREDIT", event.destination, event.source)]
            if event.source is not None:
                sides.append(("DEBIT", event.source, event.destination))
            for direction, account_id, counterparty in sides:
                for unit_class, blocks in by_class.items():
                    rows.append({
                        "account_id": account_id, "position": position,
                        "unit_class": unit_class, "direction": direction,
                        "party": event.party, "client_id": event.client_id,
                        "kind": event.kind, "counterparty": counterparty,
                        "unit_type": blocks[0].unit_class.unit_type.value,
                        "quantity": quantity(blocks), "blocks": blocks_json(blocks),
                        "reason": event.reason, "principal": event.principal,
                        "recorded_at": event.timestamp})
        if rows:
            conn.execute(insert(self.table(t.history)), rows)


class SerialsProjection(Projection):
    """Where each serial block is now, and every block each transaction moved."""

    name = "serials"
    tables = (t.serial_blocks, t.serial_movements)

    def apply(self, conn: Connection, batch: Batch) -> None:
        movements = []
        for position, event in batch:
            if not isinstance(event, Transaction.Completed):
                continue
            for block in event.blocks:
                movements.append({
                    "unit_class": block.unit_class.key, "first": block.first,
                    "position": position, "last": block.last, "source": event.source,
                    "destination": event.destination, "kind": event.kind,
                    "party": event.party, "client_id": event.client_id})
                if event.source is not None:
                    self._take(conn, block, event.source)
                conn.execute(insert(self.table(t.serial_blocks)).values(
                    unit_class=block.unit_class.key, first=block.first, last=block.last,
                    account_id=event.destination))
        if movements:
            conn.execute(insert(self.table(t.serial_movements)), movements)

    def _take(self, conn: Connection, block: SerialBlock, account_id: str) -> None:
        """Remove ``block`` from the rows of ``account_id``, keeping what is left of them."""
        sb = self.table(t.serial_blocks).c
        key = block.unit_class.key
        rows = conn.execute(select(sb.first, sb.last).where(and_(
            sb.unit_class == key, sb.account_id == account_id,
            sb.first <= block.last, sb.last >= block.first))).all()
        covered = sum(min(last, block.last) - max(first, block.first) + 1
                      for first, last in rows)
        if covered != block.quantity:
            raise RuntimeError(f"serial locations out of step: {block} is not all in "
                               f"{account_id} (found {covered})")
        for first, last in rows:
            conn.execute(delete(self.table(t.serial_blocks)).where(
                and_(sb.unit_class == key, sb.first == first)))
            for keep_first, keep_last in ((first, block.first - 1), (block.last + 1, last)):
                if keep_first <= keep_last:
                    conn.execute(insert(self.table(t.serial_blocks)).values(
                        unit_class=key, first=keep_first, last=keep_last,
                        account_id=account_id))

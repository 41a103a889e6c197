"""Projections: each turns a batch of logged events into row changes of its tables.

A projection is given a whole batch at once so that it can add up deltas in memory and
write each row once per batch: catch-up speed comes from few statements per event.
"""

from __future__ import annotations

import bisect
import json
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)

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
        locations = _SerialLocations(conn, self.table(t.serial_blocks))
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
                    locations.take(block.unit_class.key, block.first, block.last,
                                   event.source)
                locations.put(block.unit_class.key, block.first, block.last,
                              str(event.destination))
        locations.flush()
        if movements:
            conn.execute(insert(self.table(t.serial_movements)), movements)


class _SerialLocations:
    """The serial-block rows a batch touches, moved in memory and written back as a diff.

    Rows are loaded by range on first need; every later move inside a loaded range is
    pure Python, so a batch costs a few queries instead of several per block.
    """

    def __init__(self, conn: Connection, table: Table) -> None:
        self.conn, self.table = conn, table
        self.rows: dict[str, dict[int, tuple[int, str]]] = defaultdict(dict)
        self.firsts: dict[str, list[int]] = defaultdict(list)
        self.original: dict[tuple[str, int], tuple[int, str]] = {}
        self.loaded: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def _load(self, unit_class: str, first: int, last: int) -> None:
        if any(lo <= first and last <= hi for lo, hi in self.loaded[unit_class]):
            return
        c = self.table.c
        found = self.conn.execute(select(c.first, c.last, c.account_id).where(and_(
            c.unit_class == unit_class, c.first <= last, c.last >= first))).all()
        for row_first, row_last, account_id in found:
            if (unit_class, row_first) not in self.original:
                self.original[(unit_class, row_first)] = (row_last, account_id)
                self._add(unit_class, row_first, row_last, account_id)
        self.loaded[unit_class].append((first, last))

    def _add(self, unit_class: str, first: int, last: int, account_id: str) -> None:
        self.rows[unit_class][first] = (last, account_id)
        bisect.insort(self.firsts[unit_class], first)

    def _remove(self, unit_class: str, first: int) -> None:
        del self.rows[unit_class][first]
        firsts = self.firsts[unit_class]
        del firsts[bisect.bisect_left(firsts, first)]

    def take(self, unit_class: str, first: int, last: int, account_id: str) -> None:
        self._load(unit_class, first, last)
        firsts, rows = self.firsts[unit_class], self.rows[unit_class]
        index = max(0, bisect.bisect_right(firsts, first) - 1)
        overlapping = []
        while index < len(firsts) and firsts[index] <= last:
            row_first = firsts[index]
            row_last, holder = rows[row_first]
            if row_last >= first:
                overlapping.append((row_first, row_last, holder))
            index += 1
        covered = sum(min(r_last, last) - max(r_first, first) + 1
                      for r_first, r_last, holder in overlapping if holder == account_id)
        if covered != last - first + 1:
            raise RuntimeError(f"serial locations out of step: {unit_class}#{first}-{last} "
                               f"is not all in {account_id} (found {covered})")
        for row_first, row_last, holder in overlapping:
            self._remove(unit_class, row_first)
            if row_first < first:
                self._add(unit_class, row_first, first - 1, holder)
            if last < row_last:
                self._add(unit_class, last + 1, row_last, holder)

    def put(self, unit_class: str, first: int, last: int, account_id: str) -> None:
        self._add(unit_class, first, last, account_id)

    def flush(self) -> None:
        final = {(unit_class, first): row for unit_class, rows in self.rows.items()
                 for first, row in rows.items()}
        gone = [{"k_class": k[0], "k_first": k[1]} for k, row in self.original.items()
                if final.get(k) != row]
        new = [{"unit_class": k[0], "first": k[1], "last": row[0], "account_id": row[1]}
               for k, row in final.items() if self.original.get(k) != row]
        c = self.table.c
        if gone:
            self.conn.execute(delete(self.table).where(and_(
                c.unit_class == bindparam("k_class"), c.first == bindparam("k_first"))), gone)
        if new:
            self.conn.execute(insert(self.table), new)

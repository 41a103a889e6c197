"""Projections: each turns a batch of logged events into row changes of its tables.

A projection is given a whole batch at once so that it can add up deltas in memory and
write each row once per batch, with one statement per table and kind of change
(``Writer``): catch-up speed comes from few statements per event and little Python per
event. Events arrive as stored (``registry.readmodels.events``), not as domain objects.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from bisect import bisect_right, insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from sqlalchemy import Column, MetaData, Table

from registry.domain.units import UnitClass
from registry.persistence.bulk import Row, Writer
from registry.persistence.pg_arrays import packed
from registry.readmodels import tables as t
from registry.readmodels.events import (
    CLOSED,
    COMPLETED,
    CREDITED,
    DEBITED,
    FROZEN,
    HELD_UNITS_DEBITED,
    HOLD_RELEASED,
    MOVEMENTS_POSTED,
    OPENED,
    REFUSED,
    REVERSED,
    UNFROZEN,
    UNITS_HELD,
    Block,
    Event,
    blocks_json,
    quantity,
)

T = TypeVar("T")


class Batch(list[Event]):
    """The events of a runner's batch that one projection reads (after its position),
    and what several projections derive from the batch, computed once for all."""

    def __init__(
        self,
        events: Iterable[Event],
        after: int = 0,
        everything: Sequence[Event] | None = None,
        shared: dict[Any, Any] | None = None,
    ) -> None:
        super().__init__(events)
        self.after = after
        self._everything = self if everything is None else everything
        self._shared = {} if shared is None else shared

    def derived(self, compute: Callable[[Sequence[Event]], T]) -> T:
        """``compute(every decoded event of the batch after this projection's
        position)``: once per batch and position. The result is shared: read it only."""
        key = (compute, self.after)
        if key not in self._shared:
            self._shared[key] = compute(
                [event for event in self._everything if event.position > self.after]
            )
        result: T = self._shared[key]
        return result


class AccountDirectory:
    """Account (originator id as stored) -> (account id, account type): immutable facts,
    learnt from ``Account.Opened`` events and cached for the process; an account opened
    before the first batch this process read is loaded once from the event store."""

    def __init__(self, load: Callable[[UUID], Any]) -> None:
        self._load = load
        self._known: dict[str, tuple[str, str]] = {}

    def learn(self, event: Event) -> None:
        if event.topic == OPENED:
            self._known[event.originator] = (event.state["account_id"], event.state["account_type"])

    def __getitem__(self, originator: str) -> tuple[str, str]:
        known = self._known.get(originator)
        if known is None:
            account = self._load(UUID(originator))
            known = self._known[originator] = (account.account_id, account.account_type.value)
        return known


class Projection(ABC):
    """Writes the rows of its ``tables``; bound to the live tables, or to shadow copies
    (same columns, name + suffix) when it is being rebuilt from position zero.

    ``topics`` are the events it reads (those its directory learns from included):
    the runner decodes no other, and hands it no other."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    topics: ClassVar[frozenset[str]]

    def __init__(self, directory: AccountDirectory, suffix: str = "") -> None:
        self.directory = directory
        self.suffix = suffix
        self.bound: dict[str, Table] = {
            table.name: shadow_table(table, suffix) if suffix else table for table in self.tables
        }

    @property
    def tracking_name(self) -> str:
        return self.name + self.suffix

    def table(self, live: Table) -> Table:
        return self.bound[live.name]

    @abstractmethod
    def apply(self, out: Writer, batch: Batch) -> None:
        """Write the row changes for ``batch`` (the caller commits them with tracking)."""


def shadow_table(table: Table, suffix: str) -> Table:
    """A copy of ``table`` named ``<name><suffix>``, with its primary key but no other
    index (index names are global; the swap recreates them under their own names)."""
    columns = [
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in table.columns
    ]
    return Table(table.name + suffix, MetaData(), *columns, comment=table.comment)


details: Callable[[Any], str] = json.JSONEncoder(sort_keys=True).encode
"""``json.dumps(value, sort_keys=True)``, without making an encoder per call."""


@lru_cache(maxsize=4096)
def unit_class(key: str) -> tuple[str, int, str]:
    """(unit type, vintage, project) of a unit class key (validated once per key)."""
    parsed = UnitClass.from_key(key)
    return parsed.unit_type.value, parsed.vintage, parsed.project


HOLDING_EFFECTS: dict[str, tuple[tuple[str, int, int], ...]] = {
    CREDITED: (("blocks", 1, 0),),
    DEBITED: (("blocks", -1, 0),),
    UNITS_HELD: (("blocks", 0, 1),),
    HOLD_RELEASED: (("blocks", 0, -1),),
    HELD_UNITS_DEBITED: (("blocks", -1, -1), ("released", 0, -1)),
}
"""Per account event: (field of blocks, sign for total, sign for held). A
``MovementsPosted`` has one such effect per movement it carries."""


def holding_deltas(batch: Sequence[Event]) -> dict[tuple[str, str], list[int]]:
    """(account originator, unit class) -> [change of total, change of held], every key
    an event touched (with zero changes too: the row is then written, as it would be
    event by event)."""
    deltas: dict[tuple[str, str], list[int]] = {}
    for event in batch:
        for blocks, total_sign, held_sign in _holding_effects(event):
            for block in blocks:
                key, first, last = block["_data_"]
                units = last - first + 1
                delta = deltas.get((event.originator, key))
                if delta is None:
                    delta = deltas[(event.originator, key)] = [0, 0]
                delta[0] += total_sign * units
                delta[1] += held_sign * units
    return deltas


def _holding_effects(event: Event) -> Iterator[tuple[list[Any], int, int]]:
    """(stored blocks, sign for total, sign for held) of each change an event makes."""
    state = event.state
    if event.topic == MOVEMENTS_POSTED:
        for movement in state["movements"]:
            credited = movement.get("credited")
            if credited is not None:
                yield credited, 1, 0
            else:
                yield movement["debited"], -1, 0
        return
    for field, total_sign, held_sign in HOLDING_EFFECTS.get(event.topic, ()):
        yield state[field], total_sign, held_sign


class AccountsProjection(Projection):
    name = "accounts"
    tables = (t.accounts,)
    topics = frozenset({OPENED, FROZEN, UNFROZEN, CLOSED})

    COLUMNS = (
        "account_id",
        "account_uuid",
        "account_type",
        "state",
        "holder_name",
        "credit_code",
        "sector",
        "province",
        "opened_at",
        "position",
    )
    STATES: ClassVar[dict[str, str]] = {FROZEN: "FROZEN", UNFROZEN: "OPEN", CLOSED: "CLOSED"}

    def apply(self, out: Writer, batch: Batch) -> None:
        opened: dict[str, list[Any]] = {}
        changed: dict[str, tuple[str, int]] = {}
        for event in batch:
            account_uuid = str(event.uuid())
            if event.topic == OPENED:
                state, holder = event.state, event.state["holder"]
                opened[account_uuid] = [
                    state["account_id"],
                    account_uuid,
                    state["account_type"],
                    "OPEN",
                    holder.get("name", ""),
                    holder.get("credit_code", ""),
                    holder.get("sector", ""),
                    holder.get("province", ""),
                    event.timestamp(),
                    event.position,
                ]
            elif account_uuid in opened:  # opened in this batch: insert it as it ends
                opened[account_uuid][3] = self.STATES[event.topic]
                opened[account_uuid][9] = event.position
            else:
                changed[account_uuid] = (self.STATES[event.topic], event.position)
        table = self.table(t.accounts)
        out.insert(table, self.COLUMNS, list(opened.values()))
        out.update(
            table,
            ("state", "position"),
            ("account_uuid",),
            [
                (state, position, account_uuid)
                for account_uuid, (state, position) in changed.items()
            ],
        )


class HoldingsProjection(Projection):
    name = "holdings"
    tables = (t.holdings,)
    topics = frozenset({OPENED, MOVEMENTS_POSTED, *HOLDING_EFFECTS})

    COLUMNS = (
        "account_id",
        "unit_class",
        "unit_type",
        "vintage",
        "project",
        "total",
        "held",
        "available",
    )

    def apply(self, out: Writer, batch: Batch) -> None:
        rows = []
        for (originator, key), (total, held) in batch.derived(holding_deltas).items():
            unit_type, vintage, project = unit_class(key)
            rows.append(
                (
                    self.directory[originator][0],
                    key,
                    unit_type,
                    vintage,
                    project,
                    total,
                    held,
                    total - held,
                )
            )
        out.upsert(
            self.table(t.holdings),
            self.COLUMNS,
            ("account_id", "unit_class"),
            rows,
            add=("total", "held", "available"),
        )


class SupplyProjection(Projection):
    name = "supply"
    tables = (t.supply, t.issued)
    topics = frozenset({OPENED, COMPLETED, MOVEMENTS_POSTED, *HOLDING_EFFECTS})

    def apply(self, out: Writer, batch: Batch) -> None:
        deltas: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for (originator, key), (total, held) in batch.derived(holding_deltas).items():
            delta = deltas[(key, self.directory[originator][1])]
            delta[0] += total
            delta[1] += held
        issued: dict[str, list[int]] = {}
        for event in batch:
            if event.topic == COMPLETED and event.state["kind"] == "ISSUANCE":
                for key, first, last in event.blocks():
                    counts = issued.setdefault(key, [0, 1])
                    counts[0] += last - first + 1
                    counts[1] = max(counts[1], last + 1)
        out.upsert(
            self.table(t.supply),
            ("unit_class", "account_type", "total", "held"),
            ("unit_class", "account_type"),
            [
                (key, account_type, total, held)
                for (key, account_type), (total, held) in deltas.items()
            ],
            add=("total", "held"),
        )
        out.upsert(
            self.table(t.issued),
            ("unit_class", "issued", "next_serial"),
            ("unit_class",),
            [(key, count, after) for key, (count, after) in issued.items()],
            add=("issued",),
            replace=("next_serial",),
        )


class TransactionsProjection(Projection):
    name = "transactions"
    tables = (t.transactions,)
    topics = frozenset({COMPLETED, REFUSED, REVERSED})

    COLUMNS = (
        "party",
        "client_id",
        "kind",
        "status",
        "source",
        "destination",
        "quantity",
        "blocks",
        "reason",
        "principal",
        "refusal_reason",
        "refusal_message",
        "details",
        "reversed_by",
        "recorded_at",
        "position",
    )

    def __init__(
        self, directory: AccountDirectory, find_transaction: Callable[[UUID], Any], suffix: str = ""
    ) -> None:
        super().__init__(directory, suffix)
        self.find_transaction = find_transaction

    def apply(self, out: Writer, batch: Batch) -> None:
        reversals: dict[tuple[str, str], str] = {}
        table = self.table(t.transactions)
        out.insert(table, self.COLUMNS, self._rows(batch, reversals))
        out.update(
            table,
            ("reversed_by",),
            ("party", "client_id"),
            [(by, party, client_id) for (party, client_id), by in reversals.items()],
        )

    def _rows(self, batch: Batch, reversals: dict[tuple[str, str], str]) -> Iterator[Row]:
        """A row per recorded transaction; what each reversal reversed into ``reversals``
        (written after the rows, which may include the reversed one)."""
        for event in batch:
            state = event.state
            if event.topic == REVERSED:
                original = self.find_transaction(event.uuid())
                reversal = self.find_transaction(event.id_field("reversal_id"))
                reversals[(original.party, original.client_id)] = (
                    f"{reversal.party}:{reversal.client_id}"
                )
                continue
            completed = event.topic == COMPLETED
            blocks = event.blocks()
            yield (
                state["party"],
                state["client_id"],
                state["kind"],
                "COMPLETED" if completed else "REFUSED",
                state["source"],
                state["destination"],
                blocks[0][2] - blocks[0][1] + 1 if len(blocks) == 1 else quantity(blocks),
                event.blocks_json(),
                state["reason"],
                state["principal"],
                state.get("refusal_reason", ""),
                state.get("refusal_message", ""),
                details(state["details"]),
                None,
                event.timestamp(),
                event.position,
            )


class HistoryProjection(Projection):
    """One row per account, unit class and direction of every completed movement."""

    name = "history"
    tables = (t.history,)
    topics = frozenset({COMPLETED})

    COLUMNS = (
        "account_id",
        "position",
        "unit_class",
        "direction",
        "party",
        "client_id",
        "kind",
        "counterparty",
        "unit_type",
        "quantity",
        "blocks",
        "reason",
        "principal",
        "recorded_at",
    )

    def apply(self, out: Writer, batch: Batch) -> None:
        out.insert(self.table(t.history), self.COLUMNS, self._rows(batch))

    @staticmethod
    def _rows(batch: Batch) -> Iterator[Row]:
        for event in batch:
            state = event.state
            blocks = event.blocks()
            if not blocks:
                continue
            if len(blocks) == 1:  # one block: most movements
                key, first, last = blocks[0]
                lines = [(key, unit_class(key)[0], last - first + 1, event.blocks_json())]
            elif all(block[0] == blocks[0][0] for block in blocks):  # one class, mostly
                key = blocks[0][0]
                lines = [(key, unit_class(key)[0], quantity(blocks), event.blocks_json())]
            else:
                by_class: dict[str, list[Block]] = {}
                for block in blocks:
                    by_class.setdefault(block[0], []).append(block)
                lines = [
                    (key, unit_class(key)[0], quantity(group), blocks_json(group))
                    for key, group in by_class.items()
                ]
            recorded_at, position = event.timestamp(), event.position
            party, client_id, kind = state["party"], state["client_id"], state["kind"]
            reason, principal = state["reason"], state["principal"]
            source, destination = state["source"], state["destination"]
            for key, unit_type, units, blocks_text in lines:
                yield (
                    destination,
                    position,
                    key,
                    "CREDIT",
                    party,
                    client_id,
                    kind,
                    source,
                    unit_type,
                    units,
                    blocks_text,
                    reason,
                    principal,
                    recorded_at,
                )
            if source is not None:
                for key, unit_type, units, blocks_text in lines:
                    yield (
                        source,
                        position,
                        key,
                        "DEBIT",
                        party,
                        client_id,
                        kind,
                        destination,
                        unit_type,
                        units,
                        blocks_text,
                        reason,
                        principal,
                        recorded_at,
                    )


class SerialsProjection(Projection):
    """Where each serial block is now, and every block each transaction moved."""

    name = "serials"
    tables = (t.serial_blocks, t.serial_movements)
    topics = frozenset({COMPLETED})

    MOVEMENTS = (
        "unit_class",
        "first",
        "position",
        "last",
        "source",
        "destination",
        "kind",
        "party",
        "client_id",
    )

    def apply(self, out: Writer, batch: Batch) -> None:
        moves = [(event, event.blocks()) for event in batch]
        locations = SerialLocations.load(
            out,
            self.table(t.serial_blocks),
            [
                block
                for event, blocks in moves
                if event.state["source"] is not None
                for block in blocks
            ],
        )
        out.insert(
            self.table(t.serial_movements), self.MOVEMENTS, self._movements(moves, locations)
        )
        locations.flush(out)

    @staticmethod
    def _movements(
        moves: Sequence[tuple[Event, list[Block]]], locations: SerialLocations
    ) -> Iterator[Row]:
        """A row per block moved; each block moved in ``locations`` on the way."""
        for event, blocks in moves:
            state = event.state
            source, destination = state["source"], state["destination"]
            for key, first, last in blocks:
                yield (
                    key,
                    first,
                    event.position,
                    last,
                    source,
                    destination,
                    state["kind"],
                    state["party"],
                    state["client_id"],
                )
                if source is not None:
                    locations.take(key, first, last, source)
                locations.put(key, first, last, str(destination))


class SerialLocations:
    """The serial-block rows a batch touches, moved in memory and written back as a diff.

    Every row that a block the batch takes could lie in is loaded up front, in one query
    (per merged range on SQLite); the moves are then pure Python on a sorted list of
    row starts per unit class, and only rows that changed are deleted and inserted.
    Rows are disjoint (the projection never writes overlapping ones, and ``registry
    check`` reports any), so the rows overlapping a range are those starting inside it
    and the one before it.
    """

    def __init__(self, table: Table, rows: Sequence[tuple[str, int, int, str]]) -> None:
        self.table = table
        self.rows: dict[str, dict[int, tuple[int, str]]] = defaultdict(dict)
        for key, first, last, account_id in rows:
            self.rows[key][first] = (last, account_id)
        self.firsts: dict[str, list[int]] = defaultdict(list)
        for key, by_first in self.rows.items():
            self.firsts[key] = sorted(by_first)
        self.original = {
            (key, first): row
            for key, by_first in self.rows.items()
            for first, row in by_first.items()
        }

    @classmethod
    def load(cls, out: Writer, table: Table, taken: Sequence[Block]) -> SerialLocations:
        ranges = list(_merged(taken))
        if not ranges:
            return cls(table, [])
        name, c = (
            out.q(table.name),
            {n: out.q(n) for n in ("unit_class", "first", "last", "account_id")},
        )
        columns = f"b.{c['unit_class']}, b.{c['first']}, b.{c['last']}, b.{c['account_id']}"

        def starting(key: str, low: str, high: str) -> str:
            """Rows of class ``key`` from the one holding serial ``low`` to ``high``."""
            return (
                f"b.{c['unit_class']} = {key} AND b.{c['first']} <= {high} "
                f"AND b.{c['first']} >= COALESCE((SELECT max(p.{c['first']}) "
                f"FROM {name} AS p WHERE p.{c['unit_class']} = {key} "
                f"AND p.{c['first']} <= {low}), {low})"
            )

        found: dict[tuple[str, int], tuple[str, int, int, str]] = {}
        if out.postgres:
            # Planned afresh each time (never prepared): psycopg prepares a statement
            # run five times, and PostgreSQL then keeps a generic plan made while the
            # table was tiny (a hash join over every row, the predecessor's max() a scan
            # per row), whatever the table grows to: one lookup took 15 s instead of
            # 4 ms and the worker fell 79,000 events behind. A fresh plan sees the
            # table's current size whether or not autovacuum has analysed it since.
            # OFFSET 0 keeps the lateral lookup a per-range index probe (not flattened
            # into a join over the whole table).
            statement = (
                f"SELECT {columns} FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
                f"AS r(c, lo, hi) CROSS JOIN LATERAL (SELECT * FROM {name} AS b WHERE "
                f"{starting('r.c', 'r.lo', 'r.hi')} OFFSET 0) AS b"
            )
            with out.driver.cursor() as cursor:
                keys, lows, highs = zip(*ranges, strict=True)
                cursor.execute(
                    statement,
                    [packed(keys, "TEXT"), packed(lows, "BIGINT"), packed(highs, "BIGINT")],
                    prepare=False,
                )
                rows = cursor.fetchall()
        else:
            statement = f"SELECT {columns} FROM {name} AS b WHERE {starting('?', '?', '?')}"
            rows = []
            for key, low, high in ranges:
                rows += out.fetch(statement, (key, high, key, low, low))
        for row in rows:
            found[(row[0], row[1])] = row
        return cls(table, list(found.values()))

    def take(self, key: str, first: int, last: int, account_id: str) -> None:
        firsts, rows = self.firsts[key], self.rows[key]
        start = max(0, bisect_right(firsts, first) - 1)
        end = start
        covered = 0
        while end < len(firsts) and firsts[end] <= last:
            row_last, holder = rows[firsts[end]]
            if row_last >= first and holder == account_id:
                covered += min(row_last, last) - max(firsts[end], first) + 1
            end += 1
        if covered != last - first + 1:
            raise RuntimeError(
                f"serial locations out of step: {key}#{first}-{last} "
                f"is not all in {account_id} (found {covered})"
            )
        kept = []
        for row_first in firsts[start:end]:
            row_last, holder = rows[row_first]
            if row_last < first:  # ends before the block: untouched
                kept.append(row_first)
                continue
            del rows[row_first]
            if row_first < first:
                rows[row_first] = (first - 1, holder)
                kept.append(row_first)
            if last < row_last:
                rows[last + 1] = (row_last, holder)
                kept.append(last + 1)
        firsts[start:end] = kept

    def put(self, key: str, first: int, last: int, account_id: str) -> None:
        if first in self.rows[key]:
            raise RuntimeError(
                f"serial locations out of step: {key}#{first}-{last} "
                f"put into {account_id} is already in a row"
            )
        self.rows[key][first] = (last, account_id)
        insort(self.firsts[key], first)

    def flush(self, out: Writer) -> None:
        original = self.original
        gone = [key for key, row in original.items() if self.rows[key[0]].get(key[1]) != row]
        new = [
            (key, first, last, account_id)
            for key, rows in self.rows.items()
            for first, (last, account_id) in rows.items()
            if original.get((key, first)) != (last, account_id)
        ]
        out.delete(self.table, ("unit_class", "first"), gone)
        out.insert(self.table, ("unit_class", "first", "last", "account_id"), new)


def _merged(blocks: Sequence[Block]) -> Iterator[tuple[str, int, int]]:
    """The blocks' ranges per unit class, sorted, overlapping and adjacent ones merged."""
    current: list[Any] | None = None
    for key, first, last in sorted(blocks):
        if current is not None and key == current[0] and first <= current[2] + 1:
            current[2] = max(current[2], last)
            continue
        if current is not None:
            yield current[0], current[1], current[2]
        current = [key, first, last]
    if current is not None:
        yield current[0], current[1], current[2]

"""Projections: each turns a batch of logged events into row changes of its tables.

A projection is given a whole batch at once so that it can add up deltas in memory and
write each row once per batch, with one statement per table and kind of change
(``Writer``): catch-up speed comes from few statements per event and little Python per
event. Events arrive as stored (``registry.readmodels.events``), not as domain objects.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from sqlalchemy import Column, MetaData, Table

from registry.domain.units import UnitClass
from registry.persistence.bulk import Row, Writer
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
from registry.readmodels.serial_locations import RESIDENT_ROWS, SerialLocations

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

    def begin_catch_up(self, from_zero: bool) -> None:
        """A catch-up in lanes starts; ``from_zero``: from position zero, so the
        projection's tables are empty and, to ``end_catch_up``, only it writes them."""
        return  # most projections read nothing back, and have nothing to keep

    def end_catch_up(self) -> None:
        """The catch-up in lanes ended, or stopped."""
        return


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

    def __init__(self, directory: AccountDirectory, suffix: str = "") -> None:
        super().__init__(directory, suffix)
        self.resident: SerialLocations | None = None
        """Every row of the serial blocks, kept from batch to batch in a catch-up from
        zero (``serial_locations``); None: the rows a batch needs are loaded for it."""

    def begin_catch_up(self, from_zero: bool) -> None:
        self.resident = SerialLocations(self.table(t.serial_blocks)) if from_zero else None

    def end_catch_up(self) -> None:
        self.resident = None

    def apply(self, out: Writer, batch: Batch) -> None:
        moves = [(event, event.blocks()) for event in batch]
        locations = self.resident
        if locations is None:
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
        if self.resident is not None and len(self.resident) > RESIDENT_ROWS:
            self.resident = None  # committed with this batch: the next one loads its rows

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
                if source is None:  # an issuance
                    locations.put(key, first, last, str(destination))
                else:
                    locations.move(key, first, last, source, str(destination))

"""Where each serial block is: the serials projection's rows of ``rm_serial_blocks``,
moved in memory as a batch takes and puts blocks, and written back as a diff.

Per batch, every row that a block the batch takes could lie in is loaded up front, in
one query. A catch-up from position zero instead keeps every row in memory from batch
to batch (``resident``): the table starts empty and only this projection writes it, so
memory holds exactly what is committed, and the lookup (a quarter of the serials lane's
time in a 10x catch-up) is not needed. Past ``RESIDENT_ROWS`` rows the projection goes
back to loading per batch, which is always right because every batch is committed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Table

from registry.persistence.bulk import Writer
from registry.persistence.pg_arrays import packed
from registry.readmodels.events import Block

RESIDENT_ROWS = 3_000_000
"""Rows a catch-up keeps in memory at most (about 200 bytes each: 600 MB). A 10x
national year's log ends with 1.2 million."""

Row = tuple[int, str]
"""A row's last serial and holding account, by its unit class and first serial."""


class SortedKeys:
    """Distinct integers in order, in chunks of at most ``2 * CHUNK``: adding or removing
    one costs a chunk's size, not the whole sequence's (a catch-up keeps a million row
    starts of one unit class)."""

    CHUNK = 512

    def __init__(self, keys: Iterable[int] = ()) -> None:
        ordered = sorted(keys)
        self.chunks = [ordered[i : i + self.CHUNK] for i in range(0, len(ordered), self.CHUNK)]
        self.mins = [chunk[0] for chunk in self.chunks]

    def __len__(self) -> int:
        return sum(map(len, self.chunks))

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks:
            yield from chunk

    def from_floor(self, low: int, high: int) -> list[int]:
        """The greatest key <= ``low`` (if any) and every key after it up to ``high``."""
        chunks = self.chunks
        c = bisect_right(self.mins, low) - 1
        if c < 0:
            c, i = 0, 0
        else:
            i = bisect_right(chunks[c], low) - 1
        found: list[int] = []
        while c < len(chunks):
            chunk = chunks[c]
            while i < len(chunk):
                if chunk[i] > high:
                    return found
                found.append(chunk[i])
                i += 1
            c, i = c + 1, 0
        return found

    def add(self, key: int) -> None:
        if not self.chunks:
            self.chunks.append([key])
            self.mins.append(key)
            return
        c = max(0, bisect_right(self.mins, key) - 1)
        chunk = self.chunks[c]
        insort(chunk, key)
        self.mins[c] = chunk[0]
        if len(chunk) > 2 * self.CHUNK:
            half = len(chunk) // 2
            self.chunks[c + 1 : c + 1] = [chunk[half:]]
            self.mins[c + 1 : c + 1] = [chunk[half]]
            del chunk[half:]

    def remove(self, key: int) -> None:
        c = bisect_right(self.mins, key) - 1
        chunk = self.chunks[c] if c >= 0 else []
        i = bisect_left(chunk, key)
        if i == len(chunk) or chunk[i] != key:
            raise KeyError(key)
        del chunk[i]
        if not chunk:
            del self.chunks[c], self.mins[c]
        elif i == 0:
            self.mins[c] = chunk[0]


class SerialLocations:
    """The serial-block rows a batch touches (or, ``resident``, every row), moved in
    memory; ``flush`` writes the rows that changed since the last flush.

    Rows are disjoint (the projection never writes overlapping ones, and ``registry
    check`` reports any), so the rows overlapping a range are those starting inside it
    and the one before it.
    """

    def __init__(self, table: Table, rows: Iterable[tuple[str, int, int, str]] = ()) -> None:
        self.table = table
        self.rows: dict[str, dict[int, Row]] = {}
        for key, first, last, account_id in rows:
            self.rows.setdefault(key, {})[first] = (last, account_id)
        self.order = {key: SortedKeys(by_first) for key, by_first in self.rows.items()}
        self.before: dict[tuple[str, int], Row | None] = {}
        """Each row changed since the last flush, as it was then (None: absent)."""
        self.names: dict[str, str] = {}
        """One string per account, however many rows and events name it."""

    def __len__(self) -> int:
        return sum(map(len, self.rows.values()))

    @classmethod
    def load(cls, out: Writer, table: Table, taken: Sequence[Block]) -> SerialLocations:
        """The rows that the blocks ``taken`` lie in, read in one query (per merged
        range on SQLite)."""
        ranges = list(_merged(taken))
        if not ranges:
            return cls(table)
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
            keys, lows, highs = zip(*ranges, strict=True)
            with out.driver.cursor() as cursor:
                cursor.execute(
                    statement,
                    [packed(keys, "TEXT"), packed(lows, "BIGINT"), packed(highs, "BIGINT")],
                    prepare=False,
                )
                rows: list[Any] = cursor.fetchall()
        else:
            statement = f"SELECT {columns} FROM {name} AS b WHERE {starting('?', '?', '?')}"
            rows = []
            for key, low, high in ranges:
                rows += out.fetch(statement, (key, high, key, low, low))
        for row in rows:
            found[(row[0], row[1])] = row
        return cls(table, found.values())

    def take(self, key: str, first: int, last: int, account_id: str) -> None:
        """Take serials ``first..last`` of ``key`` out of ``account_id``, which must hold
        them all (else nothing changes)."""
        if self._take(key, first, last, account_id):
            self.order[key].remove(first)

    def put(self, key: str, first: int, last: int, account_id: str) -> None:
        """Put serials ``first..last`` of ``key``, in no row now, into ``account_id``."""
        self._put(key, first, last, account_id, ordered=False)

    def move(self, key: str, first: int, last: int, source: str, destination: str) -> None:
        """``take`` from ``source`` then ``put`` into ``destination``, without taking the
        start of a row that began at ``first`` out of the order only to add it back."""
        ordered = self._take(key, first, last, source)
        self._put(key, first, last, destination, ordered=ordered)

    def _take(self, key: str, first: int, last: int, account_id: str) -> bool:
        """``take``, except that where a row started at ``first`` its start stays in the
        order (True), for the caller to reuse or remove."""
        rows = self.rows.get(key, {})
        overlapping = self.order[key].from_floor(first, last) if key in self.order else []
        covered = 0
        for row_first in overlapping:
            row_last, holder = rows[row_first]
            if row_last >= first and holder == account_id:
                covered += min(row_last, last) - max(row_first, first) + 1
        if covered != last - first + 1:
            raise RuntimeError(
                f"serial locations out of step: {key}#{first}-{last} "
                f"is not all in {account_id} (found {covered})"
            )
        before, order = self.before, self.order[key]
        started = False
        for row_first in overlapping:
            row_last, holder = rows[row_first]
            if row_last < first:  # ends before the block: untouched
                continue
            before.setdefault((key, row_first), (row_last, holder))
            if row_first < first:  # keeps its start, ends before the block
                rows[row_first] = (first - 1, holder)
            else:
                del rows[row_first]
                if row_first == first:
                    started = True
                else:
                    order.remove(row_first)
            if last < row_last:  # the rest after the block
                before.setdefault((key, last + 1), None)
                rows[last + 1] = (row_last, holder)
                order.add(last + 1)
        return started

    def _put(self, key: str, first: int, last: int, account_id: str, *, ordered: bool) -> None:
        """``put``; ``ordered``: ``first`` is in the order already (``_take`` left it)."""
        rows = self.rows.setdefault(key, {})
        if first in rows:
            raise RuntimeError(
                f"serial locations out of step: {key}#{first}-{last} "
                f"put into {account_id} is already in a row"
            )
        self.before.setdefault((key, first), None)
        rows[first] = (last, self.names.setdefault(account_id, account_id))
        if not ordered:
            if key not in self.order:
                self.order[key] = SortedKeys()
            self.order[key].add(first)

    def flush(self, out: Writer) -> None:
        """Write the rows changed since the last flush: delete those that went, update
        in place those that kept their start (most: a take of a row's front and the put
        that follows at the same start), insert those that are new."""
        gone: list[tuple[str, int]] = []
        changed: list[tuple[int, str, str, int]] = []
        new: list[tuple[str, int, int, str]] = []
        for (key, first), was in self.before.items():
            now = self.rows[key].get(first)
            if now == was:
                continue
            if now is None:
                gone.append((key, first))
            elif was is None:
                new.append((key, first, now[0], now[1]))
            else:
                changed.append((now[0], now[1], key, first))
        self.before.clear()
        out.delete(self.table, ("unit_class", "first"), gone)
        out.update(self.table, ("last", "account_id"), ("unit_class", "first"), changed)
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

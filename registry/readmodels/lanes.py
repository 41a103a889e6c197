"""Catching up in lanes: the projections split into groups that each write on their own
connection and thread, while the runner reads and decodes the next batch.

On one connection the worker and PostgreSQL took turns: the worker built a batch's
rows while PostgreSQL waited, then PostgreSQL stored them while the worker waited (a
catch-up of 559,294 events: 24 s of the worker's CPU and 28 s of PostgreSQL's
statements in 44.5 s of wall time, on 2 cores). In lanes, one lane's statements run
while another lane's rows are built and the next batch is read.

Exactly-once holds per projection, as in the runner: a lane writes a batch's rows of its
projections and their tracking positions in one transaction, and its batches in log
order. After a crash the lanes may stand at different positions; the runner then reads
from the lowest and each projection skips what it has already applied.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, select

from registry.persistence.bulk import Writer
from registry.readmodels import tables as t
from registry.readmodels.events import Event
from registry.readmodels.projections import Batch, Projection

LANES: tuple[tuple[str, ...], ...] = (
    ("serials",),
    ("history", "transactions"),
    ("accounts", "holdings", "supply"),
)
"""Which projections share a lane, by what they cost (catch-up of 559,294 events from
two national years: serials' statements 14.3 s of PostgreSQL, history's and
transactions' 10.1 s, the other three's 1.8 s but as much Python as either). Holdings
and supply share the deltas they derive from a batch (``Batch.derived``)."""

DEPTH = 2
"""Batches queued for a lane at most: the reader runs that far ahead of the slowest
lane, and no further (each batch holds thousands of decoded events)."""


def lane_groups(projections: Iterable[Projection]) -> list[list[Projection]]:
    """``projections`` grouped by ``LANES``; one not named there gets a lane of its own."""
    given = list(projections)
    by_name = {p.name: p for p in given}
    groups = [[by_name[name] for name in names if name in by_name] for names in LANES]
    named = {name for names in LANES for name in names}
    groups += [[p] for p in given if p.name not in named]
    return [group for group in groups if group]


def positions_of(conn: Connection, names: Sequence[str], *, lock: bool = False) -> dict[str, int]:
    """Tracking position of each named projection; ``lock`` holds the rows to the end of
    the transaction (a rebuild's swap waits for them)."""
    query = select(t.tracking.c.projection, t.tracking.c.position).where(
        t.tracking.c.projection.in_(names)
    )
    if lock:
        query = query.with_for_update()
    return {name: int(position) for name, position in conn.execute(query).all()}


def apply_batch(
    conn: Connection,
    projections: Sequence[Projection],
    positions: dict[str, int],
    events: Sequence[Event],
    start: int,
    last: int,
) -> None:
    """The rows of the events read from ``start`` to ``last`` for each projection that
    has not applied them (by its tracking position in ``positions``), and the new
    positions, in ``conn``'s transaction."""
    out = Writer(conn)
    moved = []
    shared: dict[Any, Any] = {}
    for projection in projections:
        done = positions[projection.tracking_name]
        if done >= last:
            continue
        topics = projection.topics
        mine = Batch(
            [e for e in events if e.topic in topics]
            if done < start
            else [e for e in events if e.position > done and e.topic in topics],
            done,
            events,
            shared,
        )
        if mine:
            projection.apply(out, mine)
        moved.append((last, projection.tracking_name))
    out.update(t.tracking, ("position",), ("projection",), moved)


class Lane:
    """Some projections, written batch after batch on one connection by one thread."""

    def __init__(self, engine: Engine, projections: Sequence[Projection]) -> None:
        self.engine = engine
        self.projections = list(projections)
        self.names = [p.tracking_name for p in self.projections]
        self.error: BaseException | None = None
        self.busy = 0.0
        """Seconds spent writing batches (the rest it waited for the reader)."""
        self.cpu = 0.0
        """Of those, seconds of this lane's thread on a CPU (the rest waited for
        PostgreSQL or for the interpreter lock)."""
        self._queue: queue.Queue[tuple[Sequence[Event], int, int] | None] = queue.Queue(DEPTH)
        self._abort = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lane-{'+'.join(self.names)}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def put(self, events: Sequence[Event], start: int, last: int) -> None:
        """Queue a batch (waiting while ``DEPTH`` are queued); raises what stopped the
        lane, if something has."""
        while True:
            self.raise_error()
            try:
                self._queue.put((events, start, last), timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self, *, abort: bool = False) -> None:
        """Finish the queued batches and stop; with ``abort``, stop after the batch being
        written (what is committed stays committed)."""
        if abort:
            self._abort.set()
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()

    def describe(self) -> str:
        return f"{'+'.join(self.names)} {self.busy:.1f} s writing ({self.cpu:.1f} s CPU)"

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None and not self._abort.is_set():
                events, start, last = item
                began, cpu = time.perf_counter(), time.thread_time()
                with self.engine.begin() as conn:
                    positions = positions_of(conn, self.names, lock=True)
                    apply_batch(conn, self.projections, positions, events, start, last)
                self.busy += time.perf_counter() - began
                self.cpu += time.thread_time() - cpu
        except BaseException as error:  # handed to the runner's thread, which raises it
            self.error = error

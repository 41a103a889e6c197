"""The projection runner: follows the event log and keeps the read models current.

Exactly-once: a batch's rows and the new tracking position of every projection in it
are written in ONE database transaction, so after any crash a projection resumes from
the last position it committed, with nothing skipped and nothing applied twice.
Notification ids have gaps (rolled-back inserts); the runner always reads "greater than
the last position seen", never assumes contiguity.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from sqlalchemy import Connection, Engine, Table, delete, func, insert, select, text, update

from registry.application import Registry
from registry.application.housekeeping import Housekeeping
from registry.integrity.sealer import LedgerSealer
from registry.persistence.engine import dedicated_connection
from registry.readmodels import tables as t
from registry.readmodels.deferred_indexes import deferred_indexes
from registry.readmodels.events import OPENED, Event, EventReader
from registry.readmodels.lanes import Lane, apply_batch, lane_groups, positions_of
from registry.readmodels.projections import (
    AccountDirectory,
    AccountsProjection,
    HistoryProjection,
    HoldingsProjection,
    Projection,
    SerialsProjection,
    SupplyProjection,
    TransactionsProjection,
)

log = logging.getLogger("registry.projections")

DEFAULT_BATCH = 5000
"""Events per transaction at most. Catching up, bigger batches mean fewer round trips
per event (each costs most when other work shares the CPUs); following the head of the
log, a batch is whatever arrived since the last one, so latency does not grow."""


class _Signal:
    """New events announced: by the event table's NOTIFY channel on a LISTENing
    connection, or (``conn`` None: SQLite) never, so the follower polls."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @property
    def notifies(self) -> bool:
        """Whether a commit wakes ``wait`` (else it only times out)."""
        return self.conn is not None

    def drain(self) -> None:
        """Forget the notifications queued so far: the next read includes their commits."""
        if self.conn is not None:
            for _ in self.conn.notifies(timeout=0):
                pass

    def wait(self, stop: threading.Event, seconds: float) -> None:
        """Sleep until a notification, ``stop`` or ``seconds``."""
        if self.conn is None:
            stop.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if any(True for _ in self.conn.notifies(timeout=min(left, 0.5), stop_after=1)):
                return


class ReadModelTimeout(TimeoutError):
    """The read models did not reach the asked position in time."""


@dataclass(frozen=True)
class Progress:
    projection: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)


LANE_BACKLOG = 2
"""Batches behind at which a catch-up runs in lanes: below, starting the lanes' threads
and connections costs more than it overlaps."""

REBUILD_SUFFIX = "__rebuild"


def all_projections(registry: Registry, suffix: str = "") -> list[Projection]:
    directory = AccountDirectory(lambda uuid: registry.repository.get(uuid))
    return [
        AccountsProjection(directory, suffix),
        HoldingsProjection(directory, suffix),
        SupplyProjection(directory, suffix),
        TransactionsProjection(directory, lambda uuid: registry.repository.get(uuid), suffix),
        HistoryProjection(directory, suffix),
        SerialsProjection(directory, suffix),
    ]


PROJECTION_NAMES = ("accounts", "holdings", "supply", "transactions", "history", "serials")


class ProjectionRunner:
    def __init__(
        self,
        registry: Registry,
        engine: Engine,
        projections: Sequence[Projection] | None = None,
        batch_size: int = DEFAULT_BATCH,
        sealer: LedgerSealer | None = None,
        housekeeping: Housekeeping | None = None,
        lanes: bool = True,
    ) -> None:
        self.registry = registry
        self.lanes = lanes
        """Whether a long catch-up on PostgreSQL runs in lanes (off: one batch at a time
        on one connection, as the runner follows)."""
        self.engine = engine
        self.sealer = sealer
        """Chains (and signs) the log after each batch, where this process does that."""
        self.housekeeping = housekeeping
        """Expires due holds and proposals while following, where this process does."""
        self.on_tick: Callable[[], None] = _nothing
        """Called after every batch and every round of following: the worker's liveness."""
        self.projections = list(projections or all_projections(registry))
        self.batch_size = batch_size
        self.reader = EventReader(registry)
        self.topics = frozenset().union(*(p.topics for p in self.projections))
        self._ensure_tracking()

    def _ensure_tracking(self) -> None:
        with self.engine.begin() as conn:
            known = set(conn.execute(select(t.tracking.c.projection)).scalars())
            missing = [p.tracking_name for p in self.projections if p.tracking_name not in known]
            if missing:
                conn.execute(
                    insert(t.tracking), [{"projection": name, "position": 0} for name in missing]
                )

    def positions(self, conn: Connection | None = None, *, lock: bool = False) -> dict[str, int]:
        """Tracking position per projection; ``lock`` holds the rows to the end of the
        transaction, so a concurrent swap of rebuilt tables cannot slip in between."""
        names = [p.tracking_name for p in self.projections]
        if conn is None:
            with self.engine.connect() as own:
                return positions_of(own, names, lock=lock)
        return positions_of(conn, names, lock=lock)

    def head(self) -> int:
        return int(self.registry.recorder.max_notification_id() or 0)

    def status(self) -> list[Progress]:
        head = self.head()
        return [Progress(name, position, head) for name, position in self.positions().items()]

    def step(self) -> int:
        """Apply the next batch to every projection that has not seen it. Returns events."""
        with _collector_paused(), self.engine.begin() as conn:
            count = self._step(conn)
        if self.sealer is not None:
            self.sealer.after_step(count)
        return count

    def _step(self, conn: Connection) -> int:
        positions = self.positions(conn, lock=True)
        start = min(positions.values()) + 1
        events, count, last = self.reader.read(conn, start, self.batch_size, self.topics)
        if not count:
            return 0
        self._learn(events)
        apply_batch(conn, self.projections, positions, events, start, last)
        return count

    def _learn(self, events: Sequence[Event]) -> None:
        """Tell every directory of the accounts the batch opens (before any projection
        of the batch looks one up)."""
        for directory in {id(p.directory): p.directory for p in self.projections}.values():
            for event in events:
                if event.topic == OPENED:
                    directory.learn(event)

    def catch_up(
        self, report: Callable[[int, int, float], None] | None = None, every: float = 5.0
    ) -> int:
        """Apply everything committed so far. ``report(done, head, seconds)`` shows progress.

        More than ``LANE_BACKLOG`` batches behind on PostgreSQL, it catches up in lanes
        (``registry.readmodels.lanes``), then steps through what arrived meanwhile. A
        projection that starts from position zero then builds some of its indexes once,
        at the end (``registry.readmodels.deferred_indexes``)."""
        started = last_report = time.monotonic()
        head = self.head()
        done = 0
        self._build_deferred_indexes()  # those a catch-up that stopped left unbuilt
        positions = self.positions()
        if self._in_lanes(head, positions):
            done = self._catch_up_in_lanes(head, positions, report, every)
            self._build_deferred_indexes()
        while True:
            count = self.step()
            self.on_tick()
            done += count
            now = time.monotonic()
            if report is not None and (count == 0 or now - last_report >= every):
                report(done, head, now - started)
                last_report = now
            if count == 0:
                return done

    def _in_lanes(self, head: int, positions: dict[str, int]) -> bool:
        return (
            self.lanes
            and self.engine.dialect.name == "postgresql"
            and head - min(positions.values()) > LANE_BACKLOG * self.batch_size
        )

    def _catch_up_in_lanes(
        self,
        head: int,
        positions: dict[str, int],
        report: Callable[[int, int, float], None] | None,
        every: float,
    ) -> int:
        """Read and decode each batch once, here, and hand it to every lane; the lanes
        write it, each on its own connection, while the next batch is read. Returns the
        events read, all committed by every lane by then; raises what stopped a lane
        (the lanes' committed batches stay committed)."""
        lanes = [Lane(self.engine, group) for group in lane_groups(self.projections)]
        started = last_report = time.monotonic()
        done = 0
        failed = True
        with self.engine.begin() as conn:
            for index in deferred_indexes(
                p for p in self.projections if positions[p.tracking_name] == 0
            ):
                index.drop(conn)
        with _collector_paused():
            for lane in lanes:
                lane.start()
            try:
                for projection in self.projections:
                    projection.begin_catch_up(from_zero=positions[projection.tracking_name] == 0)
                start = min(positions.values()) + 1
                while True:
                    with self.engine.connect() as conn:
                        events, count, last = self.reader.read(
                            conn, start, self.batch_size, self.topics
                        )
                    if not count:
                        break
                    self._learn(events)
                    for lane in lanes:
                        lane.put(events, start, last)
                    if self.sealer is not None:
                        self.sealer.after_step(count)
                    self.on_tick()
                    done += count
                    start = last + 1
                    now = time.monotonic()
                    if report is not None and now - last_report >= every:
                        report(done, head, now - started)
                        last_report = now
                failed = False
            finally:
                for lane in lanes:
                    lane.close(abort=failed)
                for projection in self.projections:
                    projection.end_catch_up()
            for lane in lanes:
                lane.raise_error()
        log.info(
            "caught up in lanes: %s (of %.1f s; the longest limits the catch-up)",
            "; ".join(lane.describe() for lane in lanes),
            time.monotonic() - started,
        )
        return done

    def _build_deferred_indexes(self) -> None:
        """Build the indexes a catch-up from zero deferred (``deferred_indexes``), where
        they are missing: at its end, or after it stopped (a crash, a fault), when a
        catch-up or a follower starts."""
        if self.engine.dialect.name != "postgresql":
            return
        with self.engine.begin() as conn:
            for index in deferred_indexes(self.projections):
                index.build(conn)

    def follow(self, stop: threading.Event, poll_seconds: float = 0.2) -> None:
        """Keep applying new events until ``stop`` is set. On PostgreSQL the runner
        sleeps on the event table's NOTIFY channel (each insert notifies it) and polls
        only as a safety net; SQLite has no notifications, so it polls.

        With notifications, the ones already queued are drained *before* each read:
        every commit they announce is in that read, and any later commit notifies
        again, so none is missed. A read that came back short of a full batch reached
        the head, so the runner sleeps at once instead of reading again to find
        nothing: when trades arrive one by one, that second, empty step cost as much
        as the first.

        It first builds any indexes a stopped catch-up deferred (a server following
        in-process may be the next to run the projections)."""
        self._build_deferred_indexes()
        with self._new_events_signal() as signal:
            while not stop.is_set():
                signal.drain()
                count = self.step()
                if self.housekeeping is not None:
                    self._housekeep()
                self.on_tick()
                if count == 0 or (signal.notifies and count < self.batch_size):
                    signal.wait(stop, poll_seconds)

    def _housekeep(self) -> None:
        """A failed round is logged and tried again next time; it never stops following."""
        assert self.housekeeping is not None
        try:
            self.housekeeping.tick()
        except Exception:
            log.exception("housekeeping failed; trying again on the next round")

    @contextmanager
    def _new_events_signal(self) -> Iterator[_Signal]:
        channel = getattr(self.registry.recorder, "channel_name", None)
        if self.engine.dialect.name != "postgresql" or channel is None:
            yield _Signal(None)
            return
        with dedicated_connection(self.engine) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield _Signal(conn)

    def rebuild(self, name: str, report: Callable[[int, int, float], None] | None = None) -> int:
        """Rebuild projection ``name`` from position zero into fresh tables, then swap
        them in under the live names in one transaction. Queries and the live runner
        keep working meanwhile; the swap waits for the live runner's batch to finish."""
        matching = [p for p in self.projections if p.name == name]
        if not matching:
            raise ValueError(f"no projection {name!r}; known: {', '.join(PROJECTION_NAMES)}")
        live = matching[0]
        [shadow] = [p for p in all_projections(self.registry, REBUILD_SUFFIX) if p.name == name]
        with self.engine.begin() as conn:
            for table in shadow.bound.values():
                table.drop(conn, checkfirst=True)
                table.create(conn)
            conn.execute(delete(t.tracking).where(t.tracking.c.projection == shadow.tracking_name))
        builder = ProjectionRunner(self.registry, self.engine, [shadow], self.batch_size)
        done = builder.catch_up(report)
        with _collector_paused(), self.engine.begin() as conn:
            self.positions(conn, lock=True)  # wait out the live runner's batch
            while count := builder._step(conn):  # the last events since catch-up
                done += count
            [position] = builder.positions(conn).values()
            for live_table in live.tables:
                _swap(conn, shadow.table(live_table), live_table)
            conn.execute(
                update(t.tracking)
                .where(t.tracking.c.projection == live.name)
                .values(position=position)
            )
            conn.execute(delete(t.tracking).where(t.tracking.c.projection == shadow.tracking_name))
        return done

    def wait_for(self, position: int | None, timeout: float = 5.0) -> None:
        """Block until every projection has applied ``position`` (read your writes)."""
        wait_for_position(
            self.engine, position, timeout, [p.tracking_name for p in self.projections]
        )


def _nothing() -> None:
    pass


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for one batch (if it was on), back on after.

    A batch decodes thousands of events into dicts and lists that stay alive until it
    is written: they kept triggering collections, and the full ones traverse every
    object of the process (the application, SQLAlchemy, protobuf), which cost a third
    of the worker's CPU per event in a catch-up. The batch's objects are freed by
    reference counting as it ends; what little cyclic garbage it leaves is collected
    once the collector is back on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def wait_for_position(
    engine: Engine,
    position: int | None,
    timeout: float = 5.0,
    names: Sequence[str] = PROJECTION_NAMES,
) -> None:
    """Block until the named projections (by default all) have applied ``position``.

    Reads only the tracking table, so any process can wait, whoever runs the worker."""
    if position is None:
        return
    query = select(func.min(t.tracking.c.position)).where(t.tracking.c.projection.in_(names))
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            reached = conn.execute(query).scalar() or 0
        if reached >= position:
            return
        if time.monotonic() >= deadline:
            raise ReadModelTimeout(
                f"read models did not reach position {position} within {timeout}s "
                f"(at {reached}); is `registry project` running?"
            )
        time.sleep(0.01)


def _swap(conn: Connection, rebuilt: Table, live: Table) -> None:
    """Put ``rebuilt`` in place of ``live``: same name, same indexes, old rows gone."""
    retired = f"{live.name}__old"
    conn.execute(text(f'DROP TABLE IF EXISTS "{retired}"'))
    conn.execute(text(f'ALTER TABLE "{live.name}" RENAME TO "{retired}"'))
    conn.execute(text(f'ALTER TABLE "{rebuilt.name}" RENAME TO "{live.name}"'))
    conn.execute(text(f'DROP TABLE "{retired}"'))
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                f'ALTER TABLE "{live.name}" RENAME CONSTRAINT '
                f'"{rebuilt.name}_pkey" TO "{live.name}_pkey"'
            )
        )
    for index in live.indexes:
        index.create(conn)

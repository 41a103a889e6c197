"""The stored event log as raw rows: the one reader of the audit stream, the
projections and the chain.

Rows are read with the database driver, not through the library's mapper: the state is
the stored bytes exactly (never decoded here), a batch is one keyed range of the
position index, and each user turns rows into what it needs (the stream into
``LoggedEvent``, the projections decode a few topics' state, the chain makes
``StoredLogEvent``s) without a per-row query or object of ours. Positions are the
notification ids (SQLite: the rowid); they have gaps, so reads always ask for "after the
last position seen", never a next number.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.rows import tuple_row
from sqlalchemy import Connection, text

DEFAULT_BATCH = 5000

Row = Sequence[Any]
"""(position, originator id, originator version, topic, state[, authenticator])."""


def _as_uuid(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            return value
    return value


def _snapshots(events_table: str) -> str:
    """The library names an application's snapshot table like its event table."""
    return events_table.removesuffix("events") + "snapshots"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class EventLog:
    """Where the events are: table (as written in SQL) and its position column, and
    the snapshots' table beside it."""

    table: str
    position: str
    postgres: bool
    snapshot_table: str = ""

    @classmethod
    def of(cls, recorder: ApplicationRecorder) -> EventLog:
        """The log a registry's recorder writes."""
        log = cls.find(recorder)
        if log is None:
            raise ValueError(f"the ledger reads PostgreSQL or SQLite stores, not {recorder!r}")
        return log

    @classmethod
    def find(cls, recorder: ApplicationRecorder) -> EventLog | None:
        """The log a registry's recorder writes; None for a store with no SQL table (the
        in-memory one: ``notification_rows`` reads it)."""
        if isinstance(recorder, PostgresApplicationRecorder):
            schema = _quote(recorder.datastore.schema)
            return cls(
                f"{schema}.{_quote(recorder.events_table_name)}",
                "notification_id",
                True,
                f"{schema}.{_quote(_snapshots(recorder.events_table_name))}",
            )
        if isinstance(recorder, SQLiteApplicationRecorder):
            return cls(
                _quote(recorder.events_table_name),
                "rowid",
                False,
                _quote(_snapshots(recorder.events_table_name)),
            )
        return None

    @classmethod
    def default(cls, dialect: str) -> EventLog:
        """The registry's log on this kind of database, as migration 0001 creates it."""
        if dialect == "postgresql":
            return cls(
                '"public"."registry_events"',
                "notification_id",
                True,
                '"public"."registry_snapshots"',
            )
        if dialect == "sqlite":
            return cls('"stored_events"', "rowid", False, '"stored_snapshots"')
        raise ValueError(f"the ledger reads PostgreSQL or SQLite stores, not {dialect}")

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect of the log's database."""
        return "postgresql" if self.postgres else "sqlite"

    @contextmanager
    def cursor(self, conn: Connection) -> Iterator[Any]:
        """A driver cursor in ``conn``'s transaction (PostgreSQL: binary, so bytea comes
        as bytes, not hex)."""
        driver: Any = conn.connection.driver_connection
        if self.postgres:
            with driver.cursor(binary=True) as cursor:
                yield cursor
            return
        cursor = driver.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _fetch(
        self, conn: Connection, statement: str, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        if not self.postgres:
            statement = statement.replace("%s", "?")
        with self.cursor(conn) as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall())

    def select(
        self,
        cursor: Any,
        after: int,
        limit: int,
        *,
        upto: int | None = None,
        topics: Sequence[str] = (),
        originator: UUID | None = None,
        states_of: Sequence[str] | None = None,
        text_ids: bool = False,
        authenticator: bool = False,
    ) -> list[Row]:
        """Up to ``limit`` rows after position ``after`` (and at most ``upto``), in
        position order, on a driver cursor of the log's database: only those of
        ``topics`` and of the aggregate ``originator`` when given; the state only of
        the topics ``states_of`` when given (None for the others, which are still read,
        so that a reader's position moves past them); originator ids as the store's
        text when ``text_ids`` (PostgreSQL: dashed; SQLite stores hex text anyway); and
        each row's authenticator last when ``authenticator``."""
        mark = "%s" if self.postgres else "?"
        params: list[Any] = []
        state = "state"
        if states_of is not None:
            state = f"CASE WHEN {self._among(states_of, params)} THEN state END"
        columns = (
            f"{self.position}, "
            f"{'originator_id::text' if text_ids and self.postgres else 'originator_id'}, "
            f"originator_version, topic, {state}{', authenticator' if authenticator else ''}"
        )
        where = [f"{self.position} > {mark}"]
        params.append(after)
        if upto is not None:
            where.append(f"{self.position} <= {mark}")
            params.append(upto)
        if topics:
            where.append(self._among(topics, params))
        if originator is not None:
            where.append(f"originator_id = {mark}")
            params.append(originator if self.postgres else originator.hex)
        params.append(limit)
        cursor.execute(
            f"SELECT {columns} FROM {self.table} WHERE {' AND '.join(where)} "
            f"ORDER BY {self.position} LIMIT {mark}",
            params,
        )
        rows: list[Row] = cursor.fetchall()
        return rows

    def stream_page(
        self, cursor: Any, after: int, limit: int, topics: Sequence[str] = ()
    ) -> tuple[list[Row], int]:
        """(up to ``limit`` rows after ``after`` up to the head of the log, the head),
        read in ONE statement on PostgreSQL (the head and the page from the same
        snapshot), two on SQLite: the audit stream's page, one round trip instead of a
        head query on a connection of its own before the page's. Rows as ``select``
        gives them with ``text_ids`` (SQLite: the stored hex), each followed by one more
        value to ignore (the head, on PostgreSQL: not sliced off, to spare a copy per
        row); no rows when ``after`` is at or past the head."""
        if not self.postgres:
            cursor.execute(f"SELECT MAX({self.position}) FROM {self.table}")
            head = int(cursor.fetchone()[0] or 0)
            if after >= head:
                return [], head
            rows = self.select(cursor, after, limit, upto=head, topics=topics, text_ids=True)
            return [(*row, head) for row in rows], head
        params: list[Any] = [after]
        where = "" if not topics else f" AND {self._among(topics, params)}"
        params.append(limit)
        cursor.execute(
            f"SELECT e.*, h.head FROM (SELECT MAX({self.position}) AS head FROM {self.table}) "
            f"AS h LEFT JOIN LATERAL (SELECT {self.position}, originator_id::text, "
            f"originator_version, topic, state FROM {self.table} "
            f"WHERE {self.position} > %s AND {self.position} <= h.head{where} "
            f"ORDER BY {self.position} LIMIT %s) AS e ON true",
            params,
        )
        found = cursor.fetchall()
        head = int(found[0][5] or 0)
        if found[0][0] is None:  # the lateral page is empty: one row of NULLs
            return [], head
        return found, head

    def _among(self, topics: Sequence[str], params: list[Any]) -> str:
        """``topic`` is one of ``topics`` (never, for none), its parameters added."""
        if self.postgres:
            params.append(list(topics))
            return "topic = ANY(%s)"
        params.extend(topics)
        return f"topic IN ({', '.join('?' * len(topics)) or 'NULL'})"

    def rows(
        self,
        conn: Connection,
        after: int,
        limit: int,
        *,
        upto: int | None = None,
        states_of: Sequence[str] | None = None,
        text_ids: bool = False,
        authenticator: bool = False,
    ) -> list[Row]:
        """``select`` in ``conn``'s transaction."""
        with self.cursor(conn) as cursor:
            return self.select(
                cursor,
                after,
                limit,
                upto=upto,
                states_of=states_of,
                text_ids=text_ids,
                authenticator=authenticator,
            )

    def batches(
        self,
        conn: Connection,
        after: int = 0,
        upto: int | None = None,
        batch: int = DEFAULT_BATCH,
        *,
        authenticator: bool = False,
    ) -> Iterator[list[Row]]:
        """Every row after ``after`` (to ``upto``), fetched ``batch`` at a time: a
        million events stream through in bounded memory."""
        while True:
            rows = self.rows(conn, after, batch, upto=upto, authenticator=authenticator)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            after = int(rows[-1][0])

    def first(self, conn: Connection) -> int:
        """The first position in the log (1 when empty). The store assigns positions
        from 1; a lower one was written by hand."""
        [(first,)] = self._fetch(conn, f"SELECT MIN({self.position}) FROM {self.table}", ())
        return 1 if first is None else int(first)

    def count(self, conn: Connection) -> int:
        """Every row of the event table, whatever its position."""
        [(count,)] = self._fetch(conn, f"SELECT COUNT(*) FROM {self.table}", ())
        return int(count)

    def version_gaps(self, conn: Connection, limit: int = 10) -> list[tuple[Any, int, int, int]]:
        """Aggregates whose stored versions are not exactly 1..n, as (originator id,
        count, first, last): the write model replays by version, not by position, so a
        gap or a stray version is a forged or deleted event wherever it sits."""
        return self._fetch(
            conn,
            f"SELECT originator_id, COUNT(*), MIN(originator_version), "
            f"MAX(originator_version) FROM {self.table} GROUP BY originator_id "
            "HAVING MIN(originator_version) <> 1 OR MAX(originator_version) <> COUNT(*) "
            "ORDER BY 1 LIMIT %s",
            (limit,),
        )

    def snapshots(
        self, conn: Connection, batch: int = 1000
    ) -> Iterator[tuple[UUID | str, int, str, bytes]]:
        """Every stored snapshot, raw, by aggregate then version, ``batch`` at a time."""
        after: tuple[Any, int] | None = None
        while True:
            where = (
                ""
                if after is None
                else "WHERE originator_id > %s OR (originator_id = %s AND originator_version > %s) "
            )
            params: tuple[Any, ...] = () if after is None else (after[0], after[0], after[1])
            rows = self._fetch(
                conn,
                f"SELECT originator_id, originator_version, topic, state FROM "
                f"{self.snapshot_table} {where}ORDER BY originator_id, originator_version "
                "LIMIT %s",
                (*params, batch),
            )
            for originator, version, topic, state in rows:
                yield _as_uuid(originator), int(version), str(topic), bytes(state)
            if len(rows) < batch:
                return
            after = (rows[-1][0], int(rows[-1][1]))

    def events_of(self, conn: Connection, originator_id: UUID | str) -> list[StoredEvent]:
        """One aggregate's stored events by version, raw (not decoded)."""
        if self.postgres:
            rows = self._fetch(
                conn,
                "SELECT originator_id, originator_version, topic, state "
                f"FROM {self.table} WHERE originator_id = %s "
                "ORDER BY originator_version",
                (originator_id,),
            )
        else:
            ids = (
                (originator_id.hex, str(originator_id))
                if isinstance(originator_id, UUID)
                else (originator_id, originator_id)
            )
            rows = self._fetch(
                conn,
                "SELECT originator_id, originator_version, topic, state "
                f"FROM {self.table} WHERE originator_id IN (%s, %s) "
                "ORDER BY originator_version",
                ids,
            )
        return [StoredEvent(_as_uuid(o), int(v), str(t), bytes(s)) for o, v, t, s in rows]

    def head(self, conn: Connection) -> int:
        """The last position in the log (0 when empty)."""
        [(head,)] = self._fetch(conn, f"SELECT MAX({self.position}) FROM {self.table}", ())
        return int(head or 0)

    def latest_position(self, conn: Connection) -> int:
        """``head``, through SQLAlchemy: a dropped connection surfaces as the DBAPIError
        the API maps to a retryable UNAVAILABLE."""
        found = conn.execute(text(f"SELECT MAX({self.position}) FROM {self.table}"))
        return int(found.scalar() or 0)

    def positions(
        self, cursor: Any, originator: UUID, after_version: int, last_version: int
    ) -> dict[int, int]:
        """Aggregate version -> position, for one aggregate's versions after
        ``after_version`` up to ``last_version`` (primary key range), on a driver cursor."""
        mark = "%s" if self.postgres else "?"
        cursor.execute(
            f"SELECT originator_version, {self.position} FROM {self.table} "
            f"WHERE originator_id = {mark} AND originator_version > {mark} "
            f"AND originator_version <= {mark}",
            [originator if self.postgres else originator.hex, after_version, last_version],
        )
        return {row[0]: row[1] for row in cursor.fetchall()}

    def authenticated_upto(self, conn: Connection, upto: int) -> int | None:
        """The first position at or before ``upto`` whose event carries an
        authenticator (None: none does)."""
        rows = self._fetch(
            conn,
            f"SELECT MIN({self.position}) FROM {self.table} WHERE "
            f"{self.position} <= %s AND authenticator IS NOT NULL",
            (upto,),
        )
        return None if rows[0][0] is None else int(rows[0][0])

    def count_after(self, conn: Connection, after: int) -> int:
        [(count,)] = self._fetch(
            conn, f"SELECT COUNT(*) FROM {self.table} WHERE {self.position} > %s", (after,)
        )
        return int(count)

    def latest_version(self, conn: Connection, originator_id: UUID) -> int:
        """The version of an aggregate's last stored event (0: none): one index probe.
        Through SQLAlchemy, so a dropped connection surfaces as the DBAPIError the API
        maps to a retryable UNAVAILABLE."""
        if self.postgres:
            found = conn.execute(
                text(f"SELECT MAX(originator_version) FROM {self.table} WHERE originator_id = :id"),
                {"id": originator_id},
            )
        else:
            found = conn.execute(
                text(
                    f"SELECT MAX(originator_version) FROM {self.table} "
                    "WHERE originator_id IN (:hex, :text)"
                ),
                {"hex": originator_id.hex, "text": str(originator_id)},
            )
        return int(found.scalar() or 0)

    def position_of(self, conn: Connection, originator_id: UUID, version: int) -> int | None:
        """Where the event (originator, version) is now, if anywhere (primary key look-up)."""
        if self.postgres:
            rows = self._fetch(
                conn,
                f"SELECT {self.position} FROM {self.table} "
                "WHERE originator_id = %s AND originator_version = %s",
                (originator_id, version),
            )
        else:
            rows = self._fetch(
                conn,
                f"SELECT {self.position} FROM {self.table} "
                "WHERE originator_id IN (%s, %s) AND originator_version = %s",
                (originator_id.hex, str(originator_id), version),
            )
        return int(rows[0][0]) if rows else None


@contextmanager
def store_cursor(recorder: ApplicationRecorder, *, index_order: bool = False) -> Iterator[Any]:
    """A driver cursor on the event store's own connections, in a read transaction
    (rows as tuples). ``index_order``: on PostgreSQL, read a short range of the position
    index in index order: with statistics that lag a fast-growing log the planner picked
    a bitmap scan of the whole range plus a sort, 7x slower (the audit stream's pages)."""
    if isinstance(recorder, PostgresApplicationRecorder):
        with (
            recorder.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row, binary=True) as cursor,
        ):
            if index_order:  # both settings in one round trip
                cursor.execute(
                    "SELECT set_config('enable_bitmapscan', 'off', true), "
                    "set_config('enable_seqscan', 'off', true)"
                )
            yield cursor
        return
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as sqlite_cursor:
            yield sqlite_cursor
        return
    raise ValueError(f"no SQL table in {recorder!r}")


def notification_rows(
    recorder: ApplicationRecorder,
    after: int,
    limit: int,
    *,
    upto: int | None = None,
    topics: Sequence[str] = (),
    states_of: Collection[str] | None = None,
) -> list[Row]:
    """The rows ``EventLog.select`` gives (``text_ids``), through the library's own
    reader: for a store with no SQL table (the in-memory one) or another database."""
    page = recorder.select_notifications(
        start=after + 1, limit=limit, stop=upto, topics=list(topics)
    )
    if states_of is None:
        return [(n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in page]
    return [
        (
            n.id,
            str(n.originator_id),
            n.originator_version,
            n.topic,
            n.state if n.topic in states_of else None,
        )
        for n in page
    ]

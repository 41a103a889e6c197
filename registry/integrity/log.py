"""The stored event log as the chain reads it: raw rows in position order, in batches.

The rows are read with the database driver, not through the library's mapper, so the
state is the stored bytes exactly (never decoded) and a million events stream through
in bounded memory. Positions are the notification ids (SQLite: the rowid); they have
gaps, so reads always ask for "after the last position seen", never a next number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from sqlalchemy import Connection, text

from registry.integrity.chain import StoredLogEvent

DEFAULT_BATCH = 5000


def _event(row: tuple[Any, ...]) -> StoredLogEvent:
    """A row as an event. The registry writes a UUID, an integer, text and bytes; a row
    changed by hand (SQLite keeps whatever type it is given) is kept distinguishable
    from the original rather than refused, so the verifier can name it."""
    position, originator, version, topic, state, tag = row
    if originator is not None and not isinstance(originator, (UUID, str)):
        originator = repr(originator)
    if version is not None and not isinstance(version, int):
        version = None
    if topic is not None and not isinstance(topic, str):
        topic = repr(topic)
    if isinstance(state, str):
        state = state.encode("utf-8", "surrogatepass")
    elif state is not None and not isinstance(state, (bytes, bytearray, memoryview)):
        state = repr(state).encode()
    if tag is not None and not isinstance(tag, (bytes, bytearray, memoryview)):
        tag = None  # not a MAC: never authentic
    return StoredLogEvent(
        int(position),
        originator,
        version,
        topic,
        None if state is None else bytes(state),
        None if tag is None else bytes(tag),
    )


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
        raise ValueError(f"the ledger reads PostgreSQL or SQLite stores, not {recorder!r}")

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

    def _fetch(
        self, conn: Connection, statement: str, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        driver: Any = conn.connection.driver_connection
        if self.postgres:
            with driver.cursor(binary=True) as cursor:  # bytea as bytes, no hex
                cursor.execute(statement, params)
                return list(cursor.fetchall())
        statement = statement.replace("%s", "?")
        cursor = driver.cursor()
        try:
            cursor.execute(statement, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def read(
        self, conn: Connection, after: int, limit: int, upto: int | None = None
    ) -> list[StoredLogEvent]:
        """Up to ``limit`` events after position ``after`` (and at most ``upto``)."""
        bound = f" AND {self.position} <= %s" if upto is not None else ""
        params = (after, upto, limit) if upto is not None else (after, limit)
        rows = self._fetch(
            conn,
            f"SELECT {self.position}, originator_id, originator_version, topic, state, "
            f"authenticator FROM {self.table} WHERE {self.position} > %s{bound} "
            f"ORDER BY {self.position} LIMIT %s",
            params,
        )
        return [_event(row) for row in rows]

    def stream(
        self, conn: Connection, after: int = 0, upto: int | None = None, batch: int = DEFAULT_BATCH
    ) -> Iterator[StoredLogEvent]:
        """Every event after ``after`` (to ``upto``), fetched ``batch`` at a time."""
        while True:
            events = self.read(conn, after, batch, upto)
            yield from events
            if len(events) < batch:
                return
            after = events[-1].position

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

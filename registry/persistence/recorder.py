"""The event store's PostgreSQL recorder, with a cheaper insert.

The library inserts a save's events as one array of a composite type, which psycopg
dumps as text with a regular-expression escape per field: a third of the time of a
1,000-trade settlement went there. This recorder sends four plain arrays instead
(``unnest(uuid[], bigint[], text[], bytea[])``, dumped in binary) and otherwise keeps
the library's write path exactly: the same pipeline and transaction, the table lock
that keeps commit order equal to notification order, the NOTIFY that wakes projection
workers, and the notification ids returned in insert order.

It also renders its SQL once: the library composes statements (``psycopg.sql``) on
every call, which cost ~90 microseconds per statement, several per command.

A large save is never pipelined. In pipeline mode psycopg can stop sending a large
statement half-way while it waits for results the server cannot send yet, and the
server waits (``ClientRead``) for the rest of the statement: the connection wedges with
the event table's EXCLUSIVE lock held, every later write anywhere waits behind it, and
no server timeout ends it (the session is mid-message, so neither ``statement_timeout``
nor ``idle_in_transaction_session_timeout`` applies; measured with a standalone psycopg
3.3 script: 2 of 6 pipelined 10 MB inserts hung, 0 of 12 sent plainly). Saves up to
``PIPELINE_MAX_BYTES`` fit in the socket's send buffer whole and keep the pipeline
(one round trip, the lock held shortest); larger ones take three plain round trips.
Every write transaction also sets ``statement_timeout`` (``REGISTRY_DB_STATEMENT_TIMEOUT``)
so a statement that runs too long gives the lock back.

On a database migrated to 0006 a save is one statement: ``registry_insert_events``, a
function doing the lock, the NOTIFY and the insert server-side (the migration has its
text). The transaction above took six statements in pipeline mode: 594-680 µs of the
client's CPU and 1.1-1.3 ms of wall time for a single trade's save; the call takes
227-250 µs and 0.6-0.7 ms (``python -m bench.save_statement``), and the table lock is
held only while the server runs the function, once the whole call has arrived, so no
save can wedge with it, large or small. Its wait for the lock is bounded by the lock
timeout, or the statement timeout if that is shorter.
A database without the function (before 0006) gets the transaction above.

Every event is stored with its authenticator (``registry.integrity.authentication``):
an HMAC with the key at ``REGISTRY_EVENT_KEY``, which the ledger sealer checks before
chaining it, so a row appended by SQL without the key is never chained and signed.
``RegistrySQLiteRecorder`` does the same for the embedded store.

Selected with ``APPLICATION_RECORDER_TOPIC`` by ``registry.settings``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier

from registry.integrity.authentication import (
    authenticator,
    event_key_given,
    event_key_id,
    event_key_path,
    load_or_create_event_key,
)
from registry.persistence.faults import CONNECTION_LOST, database_fault

TOPIC = "registry.persistence.recorder:RegistryPostgresRecorder"
INSERT_ATTEMPTS = 10
"""As the library's retry, for lost connections only (``insert_events``)."""
_LIBRARY_INSERT = PostgresApplicationRecorder.insert_events.__wrapped__
"""The library's insert without its retry decorator."""

INSERT_FUNCTION = "registry_insert_events"
"""Migration 0006's function: a save in one statement."""
SIGNATURE = f"public.{INSERT_FUNCTION}(uuid[], bigint[], text[], bytea[], bytea[], integer)"

SQLITE_TOPIC = "registry.persistence.recorder:RegistrySQLiteRecorder"

logger = logging.getLogger("registry.integrity")
_warned = False


def _event_key(shared: bool) -> bytes:
    """The key that authenticates stored events (``REGISTRY_EVENT_KEY``, else made on
    first use in the data directory). ``shared``: several processes write this store
    (PostgreSQL), so a default key file per host would differ: say so at start."""
    path = event_key_path()
    key = load_or_create_event_key(path)
    global _warned
    if shared and not event_key_given() and not _warned:
        _warned = True  # once per process, not per recorder
        logger.warning(
            "REGISTRY_EVENT_KEY is not set: events are authenticated with "
            "%s (key %s); every server and worker writing this database must "
            "use the same key file, or the sealer refuses their events",
            path,
            event_key_id(key),
        )
    return key


def _authenticators(key: bytes, stored_events: Sequence[StoredEvent]) -> list[bytes]:
    return [
        authenticator(key, e.originator_id, e.originator_version, e.topic, e.state)
        for e in stored_events
    ]


PIPELINE_MAX_BYTES = 16 * 1024
"""The largest save (bytes of event state) sent in pipeline mode: Linux's default TCP
send buffer (``tcp_wmem``), so the whole pipeline leaves in one send and never waits
half-sent. A single trade's save is about 2 KB; a batch of 1,000 about 1 MB."""

STATEMENT_TIMEOUT_ENV = "POSTGRES_STATEMENT_TIMEOUT"
"""The event store's environment key, set by ``registry.settings`` from
``REGISTRY_DB_STATEMENT_TIMEOUT``: a write transaction's ``statement_timeout`` in
seconds (0: none)."""

DEFAULT_STATEMENT_TIMEOUT = 30.0


class RegistryPostgresRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        table = (
            SQL("{schema}.{table}")
            .format(schema=Identifier(datastore.schema), table=Identifier(events_table_name))
            .as_string(None)
        )
        id_type = Identifier(datastore.originator_id_type).as_string(None)
        self.event_key = _event_key(shared=True)
        self.insert_columns_statement = (
            f"INSERT INTO {table} (originator_id, originator_version, topic, state, "
            f"authenticator) SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], "
            "%b::text[], %b::bytea[], %b::bytea[]) RETURNING notification_id"
        )
        self.notify_statement = (
            SQL("NOTIFY {0}").format(Identifier(self.channel_name)).as_string(None)
        )
        self.function_statement = (
            f"SELECT * FROM {INSERT_FUNCTION}(%b::{id_type}[], %b::bigint[], %b::text[], "
            "%b::bytea[], %b::bytea[], %s)"
        )
        self._has_function: bool | None = None
        self.set_statement_timeout(DEFAULT_STATEMENT_TIMEOUT)
        self.max_id_statement = f"SELECT MAX(notification_id) FROM {table}"
        self.log_after_statement = (
            f"SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM {table} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        )
        # A lateral index lookup per aggregate, kept apart by OFFSET 0: as a plain join,
        # the generic plan PostgreSQL settles on for a prepared statement scanned the
        # whole table (76 ms at 275,000 events for two aggregates, growing with the log).
        self.newer_statement = (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM unnest(%b::{id_type}[], %b::bigint[]) WITH ORDINALITY AS seen(id, version, n) "
            f"CROSS JOIN LATERAL (SELECT * FROM {table} e WHERE e.originator_id = seen.id "
            "AND e.originator_version > seen.version OFFSET 0) e "
            "ORDER BY seen.n, e.originator_version"
        )
        self.first_statement = (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM unnest(%b::{id_type}[]) AS wanted(id) CROSS JOIN LATERAL "
            f"(SELECT * FROM {table} e WHERE e.originator_id = wanted.id "
            "AND e.originator_version = 1 OFFSET 0) e"
        )
        select = f"SELECT * FROM {table} WHERE originator_id = %s"
        self.select_statements = {
            (gt, lte, desc, limit): select
            + (" AND originator_version > %s" if gt else "")
            + (" AND originator_version <= %s" if lte else "")
            + (" ORDER BY originator_version DESC" if desc else " ORDER BY originator_version ASC")
            + (" LIMIT %s" if limit else "")
            for gt in (False, True)
            for lte in (False, True)
            for desc in (False, True)
            for limit in (False, True)
        }

    def set_statement_timeout(self, seconds: float) -> None:
        """Bound every statement of a write transaction: one that runs longer is
        cancelled and its transaction rolled back, so the table lock is given back."""
        self.lock_statements = [f"SET LOCAL statement_timeout = {round(seconds * 1000)}"] + [
            s.as_string(None) if isinstance(s, Composable) else str(s)
            for s in self.lock_table_statements
        ]
        # The plain (unpipelined) path sends these as one simple query: one round trip.
        self.prepare_plain_statement = "; ".join([*self.lock_statements, self.notify_statement])
        # The function's wait for the lock: the shorter of the two timeouts (0: none).
        bounds = [round(t * 1000) for t in (seconds, self.datastore.lock_timeout) if t > 0]
        self.lock_wait_ms = min(bounds, default=0)

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """As the library's, with the statement chosen from the pre-rendered set."""
        statement = self.select_statements[
            (gt is not None, lte is not None, desc, limit is not None)
        ]
        params = [p for p in (originator_id, gt, lte, limit) if p is not None]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [_stored(row) for row in curs.fetchall()]

    def select_newer_events(self, versions: dict[UUID, int]) -> list[StoredEvent]:
        """Every event of these aggregates after the given versions, in one query (by
        aggregate, in the order given, then version): what another process wrote since
        they were read."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self.newer_statement, (list(versions), list(versions.values())), prepare=True
            )
            return [_stored(row) for row in curs.fetchall()]

    def select_first_events(self, ids: Sequence[UUID]) -> list[StoredEvent]:
        """The first event (the creation) of each of these aggregates that exists, in
        one query."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.first_statement, (list(ids),), prepare=True)
            return [_stored(row) for row in curs.fetchall()]

    def select_log_after(self, position: int, limit: int) -> list[tuple[int, StoredEvent]]:
        """Up to ``limit`` events after ``position``, in log order, with positions."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.log_after_statement, (position, limit), prepare=True)
            return [(row["notification_id"], _stored(row)) for row in curs.fetchall()]

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's pipelined insert for small saves; a plain one for large saves,
        which pipeline mode can wedge (see the module's docstring).

        Either is retried only when the connection was lost. The library retries every
        operational error ten times: a lock or statement timeout then kept the caller
        waiting ten timeouts (100 s at a 10 s lock timeout) before it heard of it. Such a
        fault now reaches the caller at once, as retryable (``registry.persistence.faults``)."""
        # The columns (authenticators included) are made before the connection is
        # taken, so none of that work happens while the table lock is held.
        columns = self._columns(stored_events)
        plain = sum(len(e.state) for e in stored_events) > PIPELINE_MAX_BYTES
        for attempt in range(1, INSERT_ATTEMPTS + 1):
            try:
                if self.has_insert_function():
                    return self._insert_events_by_function(columns)
                if plain:
                    return self._insert_events_plainly(columns)
                return cast(
                    "Sequence[int] | None",
                    _LIBRARY_INSERT(self, stored_events, **{**kwargs, "columns": columns}),
                )
            except (OperationalError, InterfaceError) as error:
                if database_fault(error) != CONNECTION_LOST or attempt == INSERT_ATTEMPTS:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def has_insert_function(self) -> bool:
        """Whether the database has ``registry_insert_events`` (migration 0006); asked
        once per recorder."""
        if self._has_function is None and (self.datastore.schema, self.events_table_name) != (
            "public",
            "registry_events",
        ):
            self._has_function = False  # the function writes that table only
        if self._has_function is None:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute("SELECT to_regprocedure(%s) IS NOT NULL AS found", (SIGNATURE,))
                row = curs.fetchone()
                self._has_function = bool(row and row["found"])
        return self._has_function

    def _insert_events_by_function(self, columns: tuple[list[Any], ...]) -> list[int]:
        """Lock, notify and insert in one call, its own transaction."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.function_statement, (*columns, self.lock_wait_ms), prepare=True)
            return [row[INSERT_FUNCTION] for row in curs.fetchall()]

    def _insert_events_plainly(self, columns: tuple[list[Any], ...]) -> list[int]:
        """Lock, notify and insert in one transaction, each statement sent whole before
        its answer is read."""
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(self.prepare_plain_statement)
            curs.execute(self.insert_columns_statement, columns, prepare=True)
            return [row["notification_id"] for row in curs.fetchall()]

    def _columns(self, stored_events: Sequence[StoredEvent]) -> tuple[list[Any], ...]:
        return (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            _authenticators(self.event_key, stored_events),
        )

    def _lock_table(self, curs: Cursor[DictRow]) -> None:
        for statement in self.lock_statements:
            curs.execute(statement, prepare=True)

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self.notify_statement)

    def max_notification_id(self) -> int | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.max_id_statement)
            row = curs.fetchone()
            assert row is not None
            head: int | None = row["max"]
            return head

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        columns: tuple[list[Any], ...] | None = None,
        **_: Any,
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_columns_statement, columns or self._columns(stored_events), prepare=True
        )


class RegistrySQLiteRecorder(SQLiteApplicationRecorder):
    """The library's SQLite recorder, storing each event's authenticator with it."""

    def __init__(
        self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name)
        self.event_key = _event_key(shared=False)
        self.insert_events_statement = (
            f"INSERT INTO {self.events_table_name} (originator_id, originator_version, "
            "topic, state, authenticator) VALUES (?,?,?,?,?)"
        )

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        """As the library's (one statement per event, to learn each rowid), with the
        authenticator as a fifth value."""
        returning = []
        for event, tag in zip(
            stored_events, _authenticators(self.event_key, stored_events), strict=True
        ):
            originator = event.originator_id
            c.execute(
                self.insert_events_statement,
                (
                    originator.hex if isinstance(originator, UUID) else originator,
                    event.originator_version,
                    event.topic,
                    event.state,
                    tag,
                ),
            )
            returning.append(c.lastrowid)
        return cast("list[int]", returning)


def select_latest_events(
    recorder: PostgresAggregateRecorder, ids: Sequence[UUID]
) -> list[StoredEvent]:
    """The last stored event of each of these aggregates in ``recorder``'s table, in one
    query: on the snapshot store, each one's latest snapshot."""
    datastore = recorder.datastore
    table = (
        SQL("{schema}.{table}")
        .format(schema=Identifier(datastore.schema), table=Identifier(recorder.events_table_name))
        .as_string(None)
    )
    id_type = Identifier(datastore.originator_id_type).as_string(None)
    statement = (
        "SELECT s.originator_id, s.originator_version, s.topic, s.state "
        f"FROM unnest(%b::{id_type}[]) AS wanted(id) CROSS JOIN LATERAL "
        f"(SELECT * FROM {table} WHERE originator_id = wanted.id "
        "ORDER BY originator_version DESC LIMIT 1) s"
    )
    with datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (list(ids),), prepare=True)
        return [_stored(row) for row in curs.fetchall()]


def _stored(row: DictRow) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )

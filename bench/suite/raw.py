"""The raw baseline: plain psycopg doing the durable writes of a settlement, and nothing
else, so every registry figure can be read as a fraction of what the database allows.

What the registry writes for one settled trade on PostgreSQL (eventsourcing 9.5.6's
``PostgresApplicationRecorder.insert_events`` path): three rows in ``registry_events``
(the Transaction record and the two accounts' Debited/Credited events), in ONE
transaction; a batch writes one Transaction row per trade and one row per account it
touched (an ``Account.MovementsPosted`` carrying all of that account's debits and
credits when it has more than one). The transaction runs, pipelined, ``SET LOCAL
lock_timeout``, ``LOCK TABLE ... IN EXCLUSIVE MODE``, ``NOTIFY`` and one ``INSERT ...
RETURNING notification_id`` carrying all the rows. After the commit, every account whose
version crossed a multiple of 200 gets a snapshot row in ``registry_snapshots``, one
autocommit INSERT each (``Registry.snapshotting_intervals``, the library's aggregate
recorder: ``unnest`` of an array of the composite ``stored_event_uuid``).

The event INSERT here is the cheapest plain form, four arrays sent in binary
(``unnest(uuid[], bigint[], text[], bytea[])``), which is also what the registry's own
recorder (``registry/persistence/recorder.py``) sends; the library's default sends one array of
composites, dumped as text, which is slower.

The baseline does exactly that against twin tables (``bench_raw_events``,
``bench_raw_snapshots``, created from the registry's own migration DDL), with payloads
sampled from what the registry stored for the same trades in the same run, from the
same number of connections in separate processes. It leaves out everything that is not
a durable write: reading aggregates, deciding, gRPC, the read models.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.composite import CompositeInfo, register_composite

from bench.suite.callers import CallerContext

EVENTS = "bench_raw_events"
SNAPSHOTS = "bench_raw_snapshots"
SNAPSHOT_INTERVAL = 200
"""Registry.snapshotting_intervals[Account]."""
LOCK_TIMEOUT_SECONDS = 10
"""POSTGRES_LOCK_TIMEOUT as registry.settings sets it."""
TOPICS = {
    "transaction": "registry.Transaction.Completed",
    "debit": "registry.Account.Debited",
    "credit": "registry.Account.Credited",
    "posted": "registry.Account.MovementsPosted",
}
OPTIONAL = {"posted": "debit"}
"""Kinds a small run may not have written, and the kind whose payloads stand in."""
SAMPLES = 400


def one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The single row a query returns."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return tuple(row)


def create_tables(dsn: str) -> None:
    """Twin tables made from the registry's migration DDL, so they cannot differ."""
    schema = importlib.import_module("migrations.versions.0001_initial_schema")
    statements = [
        s for s in schema.PG_EVENT_STORE if "registry_events" in s or "registry_snapshots" in s
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EVENTS}, {SNAPSHOTS}")
        for statement in statements:
            conn.execute(
                statement.replace("registry_events", EVENTS).replace(
                    "registry_snapshots", SNAPSHOTS
                )
            )


def drop_tables(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EVENTS}, {SNAPSHOTS}")


@dataclass(frozen=True)
class Profile:
    """What the registry stored for the settlements of this run."""

    rows: dict[str, dict[str, float]]
    """Per kind (transaction, debit, credit, snapshot): count and average bytes."""
    samples: dict[str, list[bytes]]

    def summary(self) -> dict[str, Any]:
        return {
            kind: {"rows": int(v["count"]), "average_bytes": round(v["average"])}
            for kind, v in self.rows.items()
        }


def measure_profile(dsn: str, after_position: int) -> Profile:
    """Sizes and samples of the settlement rows written after ``after_position`` (the
    settlement scenarios), and of the snapshots written so far."""
    rows: dict[str, dict[str, float]] = {}
    samples: dict[str, list[bytes]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for kind, topic in TOPICS.items():
            count, average = one(
                conn,
                "SELECT count(*), coalesce(avg(length(state)), 0) FROM registry_events "
                "WHERE notification_id > %s AND topic = %s",
                (after_position, topic),
            )
            rows[kind] = {"count": count, "average": float(average)}
            samples[kind] = [
                bytes(r[0])
                for r in conn.execute(
                    "SELECT state FROM registry_events WHERE notification_id > %s AND topic = %s "
                    "ORDER BY notification_id DESC LIMIT %s",
                    (after_position, topic, SAMPLES),
                )
            ]
        count, average = one(
            conn, "SELECT count(*), coalesce(avg(length(state)), 0) FROM registry_snapshots"
        )
        rows["snapshot"] = {"count": count, "average": float(average)}
        samples["snapshot"] = [
            bytes(r[0])
            for r in conn.execute(
                "SELECT state FROM registry_snapshots ORDER BY originator_version DESC LIMIT %s",
                (SAMPLES,),
            )
        ]
        first = conn.execute("SELECT topic FROM registry_snapshots LIMIT 1").fetchone()
    for kind, stand_in in OPTIONAL.items():
        if not samples[kind]:
            samples[kind] = samples[stand_in]
    if not all(samples[k] for k in TOPICS):
        raise RuntimeError("no settlement rows to take the raw baseline's payloads from")
    if not samples["snapshot"]:  # a tiny run may not reach a snapshot: use an account event
        samples["snapshot"] = samples["debit"]
    samples["snapshot_topic"] = [(first[0] if first else "eventsourcing.domain:Snapshot").encode()]
    return Profile(rows, samples)


class RawSettle:
    """One connection; ``batch`` trades per transaction between this caller's own
    accounts (a pair for single trades, a pool for batches), versions kept here."""

    def __init__(self, ctx: CallerContext) -> None:
        params = ctx.job.params
        self.ctx = ctx
        self.batch: int = params["batch"]
        self.calls: int | None = params.get("calls")
        self.conn = psycopg.connect(params["dsn"], autocommit=True)
        info = CompositeInfo.fetch(self.conn, "public.stored_event_uuid")
        if info is None:
            raise RuntimeError("composite type stored_event_uuid is missing: not migrated?")
        register_composite(info, self.conn)
        if info.python_type is None:
            raise RuntimeError("psycopg made no Python type for stored_event_uuid")
        self.row: Any = info.python_type
        self.accounts = [uuid4() for _ in range(params["accounts"])]
        self.versions = dict.fromkeys(self.accounts, 2)  # opened and funded
        self.samples: dict[str, list[bytes]] = params["samples"]
        self.snapshot_topic = self.samples["snapshot_topic"][0].decode()
        self.lock = [
            sql.SQL("SET LOCAL lock_timeout = '{0}s'").format(LOCK_TIMEOUT_SECONDS),
            sql.SQL("LOCK TABLE {0}.{1} IN EXCLUSIVE MODE").format(
                sql.Identifier("public"), sql.Identifier(EVENTS)
            ),
        ]
        self.notify = sql.SQL("NOTIFY {0}").format(sql.Identifier(EVENTS))
        self.insert = sql.SQL(
            "INSERT INTO {0}.{1} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(sql.Identifier("public"), sql.Identifier(EVENTS))
        self.insert_snapshot = sql.SQL(
            "INSERT INTO {0}.{1} AS t (originator_id, originator_version, topic, state) "
            "SELECT originator_id, originator_version, topic, state "
            "FROM unnest(%s::{0}.stored_event_uuid[])"
        ).format(sql.Identifier("public"), sql.Identifier(SNAPSHOTS))
        self.count = 0

    def _payload(self, kind: str) -> bytes:
        samples = self.samples[kind]
        return samples[self.count % len(samples)]

    def prepare(self, n: int) -> tuple[str, Any]:
        rows: list[tuple[Any, int, str, bytes]] = []
        snapshots: list[Any] = []
        movements: dict[Any, list[str]] = {}
        for _ in range(self.batch):
            if len(self.accounts) == 2:
                seller, buyer = self.accounts if n % 2 == 0 else self.accounts[::-1]
            else:
                seller, buyer = self.ctx.rng.sample(self.accounts, 2)
            self.count += 1
            rows.append((uuid4(), 1, TOPICS["transaction"], self._payload("transaction")))
            movements.setdefault(seller, []).append("debit")
            movements.setdefault(buyer, []).append("credit")
        for account, kinds in movements.items():
            kind = kinds[0] if len(kinds) == 1 else "posted"
            version = self.versions[account] + 1
            self.versions[account] = version
            rows.append((account, version, TOPICS[kind], self._payload(kind)))
            if version % SNAPSHOT_INTERVAL == 0:
                snapshots.append(
                    self.row(account, version, self.snapshot_topic, self._payload("snapshot"))
                )
        return "call", (rows, snapshots)

    def send(self, request: Any) -> int:
        rows, snapshots = request
        conn = self.conn
        with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as cursor:
            for statement in self.lock:
                cursor.execute(statement, prepare=True)
            cursor.execute(self.notify)
            cursor.execute(
                self.insert, [list(column) for column in zip(*rows, strict=True)], prepare=True
            )
            pipeline.sync()
            if len(cursor.fetchall()) != len(rows):
                raise RuntimeError("the insert returned fewer notification ids than rows")
        for snapshot in snapshots:
            with conn.cursor() as cursor:
                cursor.execute(self.insert_snapshot, ([snapshot],))
        return self.batch

    def close(self) -> None:
        self.conn.close()


class RawStream:
    """The audit stream's reads with plain psycopg: per page, the head of the log, then
    one keyed SELECT of the page (the same statement and settings as the registry's
    ``read_events``); rows are fetched, not turned into messages."""

    calls = 1

    def __init__(self, ctx: CallerContext) -> None:
        self.params = ctx.job.params
        self.conn = psycopg.connect(self.params["dsn"], autocommit=True)
        self.extra: dict[str, Any] = {"page_seconds": []}

    def prepare(self, n: int) -> tuple[str, Any]:
        return "stream", None

    def send(self, request: Any) -> int:
        page_size, wanted = self.params["page_size"], self.params["max_events"]
        pages = self.extra["page_seconds"]
        after = count = 0
        last = time.perf_counter()
        while count < wanted:
            head = one(self.conn, "SELECT max(notification_id) FROM registry_events")[0] or 0
            with (
                self.conn.transaction(),
                self.conn.cursor(row_factory=tuple_row, binary=True) as cursor,
            ):
                cursor.execute("SET LOCAL enable_bitmapscan = off")
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute(
                    "SELECT notification_id, originator_id::text, originator_version, topic, "
                    "state FROM registry_events WHERE notification_id > %s AND "
                    "notification_id <= %s ORDER BY notification_id LIMIT %s",
                    (after, head, min(page_size, wanted - count)),
                )
                rows = cursor.fetchall()
            if not rows:
                break
            count += len(rows)
            after = rows[-1][0]
            now = time.perf_counter()
            pages.append(now - last)
            last = now
        return count

    def close(self) -> None:
        self.conn.close()

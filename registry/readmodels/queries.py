"""Queries served from the read models (never by replaying aggregates).

Pages use keyset pagination: a page token is the opaque encoding of the last row's key,
so a page is as cheap at row 10 million as at row 10 and stable under inserts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from sqlalchemy import Connection, Engine, Select, and_, case, func, literal, select, true, tuple_

from registry.domain.errors import (
    InvalidCommand,
    UnknownAccount,
    UnknownSerial,
    UnknownTransaction,
)
from registry.domain.ledger import TRANSFER_KINDS
from registry.persistence.eventlog import EventLog
from registry.readmodels import tables as t
from registry.readmodels.runner import wait_for_position

MAX_PAGE = 1000


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_token: str
    """Empty when this is the last page."""


def encode_token(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_token(token: str, length: int) -> list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise InvalidCommand(
            "page token is not one this registry issued", reason="INVALID_PAGE_TOKEN"
        ) from None
    if not isinstance(key, list) or len(key) != length:
        raise InvalidCommand(
            "page token is not one this registry issued", reason="INVALID_PAGE_TOKEN"
        )
    return key


def check_page_size(size: int) -> int:
    if not 0 < size <= MAX_PAGE:
        raise InvalidCommand(
            f"page size must be 1..{MAX_PAGE}, got {size}", reason="INVALID_PAGE_SIZE"
        )
    return size


class ReadModels:
    """Query facade over the read-model tables of one database."""

    def __init__(
        self, engine: Engine, reads: Engine | None = None, replica: Engine | None = None
    ) -> None:
        self.engine = engine
        """The read models' own engine: what a projection runner in this process uses."""
        self.reads = reads or engine
        """Reads of the primary: on PostgreSQL, ``make_read_engine``'s (autocommit,
        ``registry.persistence.engine``). What must never be stale reads here (the
        access check, the log's head)."""
        self.queries = replica or self.reads
        """What the queries below and their read-your-writes wait use: a read replica
        (``make_replica_engine``) when one is configured, else ``reads``."""

    def wait_for(self, position: int | None, timeout: float = 5.0) -> None:
        """Read your writes: block until the read models include ``position`` (the
        position a command returned), or raise ReadModelTimeout. On a replica, the
        replicated tracking table reaches it once the replica has replayed it."""
        wait_for_position(self.queries, position, timeout)

    def account(self, account_id: str) -> dict[str, Any]:
        with self.queries.connect() as conn:
            row = (
                conn.execute(select(t.accounts).where(t.accounts.c.account_id == account_id))
                .mappings()
                .first()
            )
        if row is None:
            raise UnknownAccount(f"no account {account_id}", account=account_id)
        return dict(row)

    def frozen_accounts(self) -> list[str]:
        """The ids of accounts frozen now, in order."""
        a = t.accounts.c
        with self.queries.connect() as conn:
            return list(
                conn.execute(
                    select(a.account_id).where(a.state == "FROZEN").order_by(a.account_id)
                ).scalars()
            )

    def holdings(self, account_id: str) -> list[dict[str, Any]]:
        """Per unit class: total, held and available; unit classes with nothing left
        are omitted. One query when the account holds something (the hot path); the
        account is looked up only to tell "holds nothing" from "does not exist"."""
        h = t.holdings.c
        with self.queries.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    select(t.holdings)
                    .where(and_(h.account_id == account_id, h.total > 0))
                    .order_by(h.unit_class)
                ).mappings()
            ]
        if not rows:
            self.account(account_id)
        return rows

    def holdings_and_version(
        self, account_id: str, log: EventLog, originator_id: UUID
    ) -> tuple[list[dict[str, Any]], int]:
        """``holdings``, and the stored version of one write-model aggregate read in the
        same statement (0: never saved, or the account holds nothing: then the version
        is not needed). GetBalances reads the restriction index's this way, to know at
        no extra round trip whether its cached copy is current.

        On PostgreSQL one statement through the driver (``fetch_rows``): SQLAlchemy's
        execution layer cost more CPU than the query itself on this, the hottest read."""
        if self.queries.dialect.name != "postgresql":
            rows = self.holdings(account_id)
            if not rows:
                return rows, 0
            with self.queries.connect() as conn:
                return rows, log.latest_version(conn, originator_id)
        sql = _holdings_and_version_sql(log.table)
        found = fetch_rows(self.queries, sql, (originator_id, account_id))
        if not found:
            self.account(account_id)  # "holds nothing" or "no such account"
            return [], 0
        return [dict(zip(_HOLDING_COLUMNS, row[:-1], strict=True)) for row in found], int(
            found[0][-1] or 0
        )

    def balances_as_of(self, account_id: str, as_of: datetime) -> list[dict[str, Any]]:
        """Per unit class, what the account held at ``as_of`` (movements recorded at or
        before it): credits minus debits from its history; classes at 0 are omitted."""
        self.account(account_id)
        h = t.history.c
        query = (
            _history_totals(as_of, h.unit_class)
            .where(h.account_id == account_id)
            .order_by(h.unit_class)
        )
        with self.queries.connect() as conn:
            return [
                {"unit_class": r.unit_class, "total": int(r.total)}  # SUM: NUMERIC on PG
                for r in conn.execute(query)
                if r.total != 0
            ]

    def positions(
        self,
        *,
        page_size: int = 100,
        page_token: str = "",
        as_of: datetime | None = None,
        account_ids: Sequence[str] = (),
    ) -> Page:
        """Every account's positive holdings by unit class, keyset-paged by (account,
        class): now from rm_holdings, or as of a past time from the history (which does
        not know what holds reserved then, so ``held`` is 0 there)."""
        check_page_size(page_size)
        after = decode_token(page_token, 2) if page_token else None
        if as_of is None:
            h = t.holdings.c
            query = select(h.account_id, h.unit_class, h.total, h.held).where(h.total > 0)
            key = (h.account_id, h.unit_class)
        else:
            c = t.history.c
            query = (
                _history_totals(as_of, c.account_id, c.unit_class)
                .add_columns(literal(0).label("held"))
                .having(_credits_minus_debits() > 0)
            )
            key = (c.account_id, c.unit_class)
        if account_ids:
            query = query.where(key[0].in_(list(account_ids)))
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        query = query.order_by(*key).limit(page_size + 1)
        with self.queries.connect() as conn:
            rows = [
                {
                    "account_id": r.account_id,
                    "unit_class": r.unit_class,
                    "total": int(r.total),
                    "held": int(r.held),
                }
                for r in conn.execute(query)
            ]
        more = len(rows) > page_size
        rows = rows[:page_size]
        token = encode_token([rows[-1]["account_id"], rows[-1]["unit_class"]]) if more else ""
        return Page(rows, token)

    def transaction(self, party: str, client_id: str) -> dict[str, Any]:
        c = t.transactions.c
        with self.queries.connect() as conn:
            row = (
                conn.execute(
                    select(t.transactions).where(and_(c.party == party, c.client_id == client_id))
                )
                .mappings()
                .first()
            )
        if row is None:
            ref = f"{party}:{client_id}"
            raise UnknownTransaction(f"no transaction {ref}", transaction=ref)
        return dict(row)

    def history(
        self,
        account_id: str,
        *,
        page_size: int = 100,
        page_token: str = "",
        kinds: Sequence[str] = (),
        unit_class: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page:
        """An account's movements, oldest first, filtered by kind, class and time."""
        check_page_size(page_size)
        h = t.history.c
        where = [h.account_id == account_id]
        if kinds:
            where.append(h.kind.in_(list(kinds)))
        if unit_class:
            where.append(h.unit_class == unit_class)
        if since is not None:
            where.append(h.recorded_at >= since)
        if until is not None:
            where.append(h.recorded_at < until)
        if page_token:
            position, klass, direction = decode_token(page_token, 3)
            where.append(
                tuple_(h.position, h.unit_class, h.direction) > tuple_(position, klass, direction)
            )
        query = (
            select(t.history)
            .where(and_(*where))
            .order_by(h.position, h.unit_class, h.direction)
            .limit(page_size + 1)
        )
        with self.queries.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            more = len(rows) > page_size
            rows = rows[:page_size]
            _add_references(conn, rows)
        token = (
            encode_token([rows[-1]["position"], rows[-1]["unit_class"], rows[-1]["direction"]])
            if more
            else ""
        )
        return Page(rows, token)

    def net_sales(self, account_id: str, since: datetime, until: datetime) -> int:
        """Allowances (CEA) the account sold net through exchange settlement in
        [since, until): units settled out minus units settled in (negative: it bought
        more than it sold). Reversed settlements are not netted out."""
        h = t.history.c
        signed = case((h.direction == "DEBIT", h.quantity), else_=-h.quantity)
        query = select(func.coalesce(func.sum(signed), 0)).where(
            h.account_id == account_id,
            h.kind == "SETTLEMENT",
            h.unit_type == "CEA",
            h.recorded_at >= since,
            h.recorded_at < until,
        )
        with self.queries.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def supply(self) -> dict[str, dict[str, Any]]:
        """Per unit class: issued, and total/held by holding account type."""
        with self.queries.connect() as conn:
            result: dict[str, dict[str, Any]] = {
                row.unit_class: {"issued": row.issued, "by_account_type": {}}
                for row in conn.execute(select(t.issued))
            }
            for row in conn.execute(select(t.supply)):
                line = result.setdefault(row.unit_class, {"issued": 0, "by_account_type": {}})
                line["by_account_type"][row.account_type] = {"total": row.total, "held": row.held}
        return result

    def locate_serial(self, unit_class: str, serial: int) -> str:
        """The account holding ``serial`` of ``unit_class`` now."""
        s = t.serial_blocks.c
        with self.queries.connect() as conn:
            account = conn.execute(
                select(s.account_id).where(
                    and_(s.unit_class == unit_class, s.first <= serial, s.last >= serial)
                )
            ).scalar()
        if account is None:
            raise UnknownSerial(
                f"serial {serial} of {unit_class} was never issued",
                unit_class=unit_class,
                serial=serial,
            )
        return str(account)

    def trace_serial(self, unit_class: str, serial: int) -> list[dict[str, Any]]:
        """Every transaction that moved ``serial``, in log order: the chain of holders."""
        m = t.serial_movements.c
        with self.queries.connect() as conn:
            rows = conn.execute(
                select(t.serial_movements)
                .where(
                    and_(
                        m.unit_class == unit_class,
                        m.first <= serial,
                        m.last >= serial,
                    )
                )
                .order_by(m.position)
            ).mappings()
            return [dict(r) for r in rows]

    def accounts(
        self,
        *,
        page_size: int = 100,
        page_token: str = "",
        account_type: str | None = None,
        sector: str | None = None,
        province: str | None = None,
    ) -> Page:
        check_page_size(page_size)
        a = t.accounts.c
        where = []
        for column, value in (
            (a.account_type, account_type),
            (a.sector, sector),
            (a.province, province),
        ):
            if value:
                where.append(column == value)
        if page_token:
            [after] = decode_token(page_token, 1)
            where.append(a.account_id > after)
        query = (
            select(t.accounts)
            .where(and_(true(), *where))
            .order_by(a.account_id)
            .limit(page_size + 1)
        )
        with self.queries.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > page_size
        rows = rows[:page_size]
        return Page(rows, encode_token([rows[-1]["account_id"]]) if more else "")


TRANSFER_KIND_NAMES = frozenset(kind.value for kind in TRANSFER_KINDS)


def _add_references(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Each history row's ``reference``: a transfer's, from its transaction's details
    (one lookup for the page's transfers, none when it has none); "" otherwise."""
    wanted = {(r["party"], r["client_id"]) for r in rows if r["kind"] in TRANSFER_KIND_NAMES}
    found: dict[tuple[str, str], str] = {}
    if wanted:
        c = t.transactions.c
        query = select(c.party, c.client_id, c.details).where(
            and_(
                c.party.in_(sorted({p for p, _ in wanted})),
                c.client_id.in_(sorted({i for _, i in wanted})),
            )
        )
        for party, client_id, text in conn.execute(query):
            found[(party, client_id)] = str(json.loads(text).get("reference", ""))
    for row in rows:
        row["reference"] = found.get((row["party"], row["client_id"]), "")


def _credits_minus_debits() -> Any:
    h = t.history.c
    return func.sum(case((h.direction == "CREDIT", h.quantity), else_=-h.quantity))


def _history_totals(as_of: datetime, *group: Any) -> Select[Any]:
    """The ``group`` columns and credits minus debits (``total``) recorded at or before
    ``as_of``, grouped by them (a naive ``as_of`` is taken as UTC, as protobuf
    timestamps convert)."""
    h = t.history.c
    return (
        select(*group, _credits_minus_debits().label("total"))
        .where(h.recorded_at <= _utc(as_of))
        .group_by(*group)
    )


def _utc(moment: datetime) -> datetime:
    """In UTC: SQLite compares the stored text, which is written in UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_HOLDING_COLUMNS = ("unit_class", "unit_type", "vintage", "project", "total", "held", "available")


def _holdings_and_version_sql(events_table: str) -> str:
    h = t.holdings.name
    return (
        f"SELECT {', '.join(_HOLDING_COLUMNS)}, "
        f"(SELECT MAX(originator_version) FROM {events_table} WHERE originator_id = %s) "
        f"FROM {h} WHERE account_id = %s AND total > 0 ORDER BY unit_class"
    )


def fetch_rows(engine: Engine, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """One read statement on a pooled connection of ``engine``, through the driver
    (PostgreSQL read engines: autocommit, nothing to reset on return).

    SQLAlchemy's execution layer (a ``Connection``, an execution context, a result)
    costs about 100 µs of CPU per statement, more than a primary-key probe itself: on a
    read made tens of times per second per caller that is the largest share. What it
    would also do is kept: a connection the database dropped is invalidated, so the
    pool replaces it, and the driver's error propagates (``database_fault`` names it,
    the API answers UNAVAILABLE, retryable)."""
    pooled = engine.raw_connection()
    cursor = None
    try:
        cursor = pooled.cursor()
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    except psycopg.Error as error:
        if engine.dialect.is_disconnect(error, pooled.dbapi_connection, cursor):  # type: ignore[arg-type]  # psycopg is the DBAPI here
            pooled.invalidate(error)
        raise
    finally:
        if cursor is not None:
            with suppress(Exception):  # the connection is gone: the error above says so
                cursor.close()
        pooled.close()

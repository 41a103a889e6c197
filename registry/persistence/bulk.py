"""Bulk row changes, one statement per table and kind of change: how the projections
and the ledger write, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any

from psycopg.postgres import types as pg_types
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

from registry.persistence.pg_arrays import packed

Row = Sequence[Any]


class Writer:
    """Bulk row changes of one batch, one statement per table and kind of change.

    Works on the DBAPI connection under a SQLAlchemy connection, so in its transaction,
    without SQLAlchemy's per-row work. PostgreSQL gets binary ``COPY`` for inserts and
    ``unnest``-ed arrays for the rest (one round trip however many rows); SQLite, in
    process, gets ``executemany``. Values go through SQLAlchemy's own bind processors
    where the dialect has one (SQLite datetimes), so rows are stored exactly as a
    SQLAlchemy insert would store them.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self.driver: Any = conn.connection.driver_connection
        self._quote = conn.dialect.identifier_preparer.quote

    def q(self, name: str) -> str:
        return str(self._quote(name))

    def fetch(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.driver.cursor()
        try:
            cursor.execute(statement, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows
        finally:
            cursor.close()

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[Row]) -> None:
        """Insert ``rows`` (values in the order of ``columns``). Rows may be generated
        as they are written: PostgreSQL then stores the first ones while the rest are
        still being made (COPY sends every 32 KiB)."""
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return
        names = ", ".join(self.q(c) for c in columns)
        if self.postgres:  # binary: no number or time formatting and parsing
            with (
                self.driver.cursor() as cursor,
                cursor.copy(
                    f"COPY {self.q(table.name)} ({names}) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(_pg_oids(table, columns))
                write = copy.write_row
                write(first)
                for row in rows:
                    write(row)
            return
        marks = ", ".join("?" * len(columns))
        self._many(
            f"INSERT INTO {self.q(table.name)} ({names}) VALUES ({marks})",
            self._processed(table, columns, chain((first,), rows)),
        )

    def upsert(
        self,
        table: Table,
        columns: Sequence[str],
        keys: Sequence[str],
        rows: Sequence[Row],
        add: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> None:
        """Insert ``rows``, or add their ``add`` columns to the row already there (and
        overwrite its ``replace`` columns). Keys must be unique within ``rows``."""
        if not rows:
            return
        name = self.q(table.name)
        changes = ", ".join(
            [f"{self.q(c)} = {name}.{self.q(c)} + excluded.{self.q(c)}" for c in add]
            + [f"{self.q(c)} = excluded.{self.q(c)}" for c in replace]
        )
        conflict = f"ON CONFLICT ({', '.join(self.q(k) for k in keys)}) DO UPDATE SET {changes}"
        names = ", ".join(self.q(c) for c in columns)
        if self.postgres:
            self._arrays(
                f"INSERT INTO {name} ({names}) SELECT * FROM {{}} {conflict}", table, columns, rows
            )
            return
        marks = ", ".join("?" * len(columns))
        self._many(
            f"INSERT INTO {name} ({names}) VALUES ({marks}) {conflict}",
            self._processed(table, columns, rows),
        )

    def update(
        self, table: Table, values: Sequence[str], keys: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Set ``values`` of the row with ``keys``; each row is (*values, *keys), and
        keys must be unique within ``rows``."""
        if not rows:
            return
        name = self.q(table.name)
        columns = [*values, *keys]
        if self.postgres:
            sets = ", ".join(f"{self.q(c)} = v.{self.q(c)}" for c in values)
            where = " AND ".join(f"{name}.{self.q(k)} = v.{self.q(k)}" for k in keys)
            self._arrays(f"UPDATE {name} SET {sets} FROM {{}} WHERE {where}", table, columns, rows)
            return
        sets = ", ".join(f"{self.q(c)} = ?" for c in values)
        where = " AND ".join(f"{self.q(k)} = ?" for k in keys)
        self._many(f"UPDATE {name} SET {sets} WHERE {where}", self._processed(table, columns, rows))

    def delete(self, table: Table, keys: Sequence[str], rows: Sequence[Row]) -> None:
        """Delete the rows whose ``keys`` columns equal one of ``rows``."""
        if not rows:
            return
        name = self.q(table.name)
        if self.postgres:
            where = " AND ".join(f"{name}.{self.q(k)} = v.{self.q(k)}" for k in keys)
            self._arrays(f"DELETE FROM {name} USING {{}} WHERE {where}", table, keys, rows)
            return
        where = " AND ".join(f"{self.q(k)} = ?" for k in keys)
        self._many(f"DELETE FROM {name} WHERE {where}", self._processed(table, keys, rows))

    # -- dialect details ----------------------------------------------------------

    def _arrays(
        self, statement: str, table: Table, columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """PostgreSQL: run ``statement`` with ``{}`` standing for the rows, passed as one
        array per column (packed in C where ``pg_arrays`` can) and unnested into
        ``v(<columns>)``."""
        types = [_pg_type(table, c) for c in columns]
        arrays = ", ".join(f"%s::{sql_type}[]" for sql_type in types)
        names = ", ".join(self.q(c) for c in columns)
        source = f"unnest({arrays}) AS v({names})"
        values = zip(*rows, strict=True)
        with self.driver.cursor() as cursor:
            cursor.execute(
                statement.format(source),
                [packed(column, sql_type) for column, sql_type in zip(values, types, strict=True)],
            )

    def _many(self, statement: str, rows: Iterable[Row]) -> None:
        cursor = self.driver.cursor()
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()

    def _processed(
        self, table: Table, columns: Sequence[str], rows: Iterable[Row]
    ) -> Iterable[Row]:
        processors = [
            (index, process)
            for index, process in enumerate(_processors(self.conn, table, columns))
            if process is not None
        ]
        if not processors:
            return rows
        return (_process(row, processors) for row in rows)


def _process(row: Row, processors: Sequence[tuple[int, Callable[[Any], Any]]]) -> Row:
    """``row`` with the values of the columns that have a bind processor processed."""
    values = list(row)
    for index, process in processors:
        if values[index] is not None:
            values[index] = process(values[index])
    return values


_PG_TYPES: dict[tuple[str, str], str] = {}
_PG_OIDS: dict[tuple[str, tuple[str, ...]], list[int]] = {}
_PG_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_PROCESSORS: dict[tuple[str, str, tuple[str, ...]], list[Callable[[Any], Any] | None]] = {}


def _pg_type(table: Table, column: str) -> str:
    key = (table.name, column)
    if key not in _PG_TYPES:
        _PG_TYPES[key] = str(table.c[column].type.compile(dialect=_PG_DIALECT))
    return _PG_TYPES[key]


def _pg_oids(table: Table, columns: Sequence[str]) -> list[int]:
    """The PostgreSQL type of each column, as binary COPY needs them."""
    key = (table.name, tuple(columns))
    if key not in _PG_OIDS:
        _PG_OIDS[key] = [
            pg_types.get_oid(re.sub(r"\(.*\)", "", _pg_type(table, c)).lower()) for c in columns
        ]
    return _PG_OIDS[key]


def _processors(
    conn: Connection, table: Table, columns: Sequence[str]
) -> list[Callable[[Any], Any] | None]:
    dialect = conn.dialect
    key = (dialect.name, table.name, tuple(columns))
    if key not in _PROCESSORS:
        _PROCESSORS[key] = [
            table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns
        ]
    return _PROCESSORS[key]

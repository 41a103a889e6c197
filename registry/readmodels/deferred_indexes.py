"""Indexes that a catch-up from position zero builds once, at its end, instead of row by
row: PostgreSQL sorts a whole table into an index in seconds, while keeping it row by
row costs a random index page per row once the tables outgrow ``shared_buffers``.

Measured on two national years, 1x and 10x (3,565,479 events; the read models 2.5 GB):
catching up in lanes took 210 s with every index kept and 175 s without these, plus
12.5 s to build them at the end. The history's COPY went from 36.3 to 10.5 µs a row,
the serial movements' from 23.3 to 13.0 (docs/performance.md, "Catch-up in lanes").

Only indexes no projection reads while it writes are deferred: the serial blocks'
primary key (each batch looks up and deletes by it), the holdings' and supply's (their
upserts), the transactions' (a reversal updates by it) and the accounts' stay. A primary
key is also a guard against a row written twice; deferred, it is checked once, when it
is built again (a duplicate then fails the catch-up, loudly, instead of a batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Index, Table, text

from registry.readmodels.projections import Projection

DEFERRED_KEYS = frozenset({"rm_account_history", "rm_serial_movements"})
"""Tables whose primary key is deferred: written by COPY alone, never read or
conflicted on while projecting."""

DEFERRED_INDEXES = frozenset(
    {
        "ix_rm_account_history_kind",
        "ix_rm_account_history_time",
        "ix_rm_serial_movements_range",
        "ix_rm_serial_blocks_account",
        "ix_rm_transactions_position",
    }
)
"""Secondary indexes deferred: queries read through them, projections do not."""


@dataclass(frozen=True)
class DeferredIndex:
    """A deferred index of a table as a projection binds it (live or a rebuild's
    shadow); ``index`` None is the table's primary key."""

    table: Table
    index: Index | None

    @property
    def name(self) -> str:
        return f"{self.table.name}_pkey" if self.index is None else str(self.index.name)

    def exists(self, conn: Connection) -> bool:
        return (
            conn.execute(text("SELECT to_regclass(:name)"), {"name": self.name}).scalar()
            is not None
        )

    def drop(self, conn: Connection) -> None:
        if not self.exists(conn):
            return
        if self.index is None:
            conn.execute(text(f'ALTER TABLE "{self.table.name}" DROP CONSTRAINT "{self.name}"'))
        else:
            self.index.drop(conn)

    def build(self, conn: Connection) -> None:
        if self.exists(conn):
            return
        if self.index is None:
            columns = ", ".join(f'"{c.name}"' for c in self.table.primary_key.columns)
            conn.execute(
                text(
                    f'ALTER TABLE "{self.table.name}" ADD CONSTRAINT "{self.name}" '
                    f"PRIMARY KEY ({columns})"
                )
            )
        else:
            self.index.create(conn)


def deferred_indexes(projections: Iterable[Projection]) -> list[DeferredIndex]:
    """The deferred indexes of the tables ``projections`` write."""
    found = []
    for projection in projections:
        for live in projection.tables:
            table = projection.table(live)
            if live.name in DEFERRED_KEYS:
                found.append(DeferredIndex(table, None))
            found += [DeferredIndex(table, i) for i in table.indexes if i.name in DEFERRED_INDEXES]
    return found

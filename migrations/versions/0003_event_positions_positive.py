"""Event positions are positive: a row at a position the store never assigns is refused.

The store assigns notification ids from 1 (PostgreSQL: a bigserial; SQLite: the rowid),
but nothing stopped a row written by hand at 0 or below, and the write model applies
events by aggregate and version wherever they sit in the log. PostgreSQL gets
``CHECK (notification_id > 0)``; SQLite, which cannot add a constraint to a table, gets
triggers refusing such an insert or update. A database already holding such a row fails
this upgrade: that row is a forgery to investigate (`registry verify` names it).

A constraint is not a defence against whoever can drop it: `registry verify` reads every
row of the event table whatever its position. It makes the mistake or the casual forgery
impossible, and dropping it visible in the schema.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_CONSTRAINT = "registry_events_notification_id_positive"
SQLITE_TRIGGERS = {
    "stored_events_position_positive_insert": "AFTER INSERT",
    "stored_events_position_positive_update": "AFTER UPDATE",
}


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE public.registry_events ADD CONSTRAINT {PG_CONSTRAINT} "
            "CHECK (notification_id > 0)"
        )
        return
    for name, when in SQLITE_TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {when} ON stored_events "
            "WHEN NEW.rowid <= 0 BEGIN SELECT RAISE(ABORT, "
            "'event positions start at 1: notification id must be positive'); END"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE public.registry_events DROP CONSTRAINT {PG_CONSTRAINT}")
        return
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")

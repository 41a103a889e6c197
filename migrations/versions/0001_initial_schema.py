"""Initial schema: the event store's tables and every read-model table.

Event store (application "Registry", eventsourcing 9.5.6 with CREATE_TABLE=n): the DDL
below is the library's own, copied verbatim so that a library upgrade cannot change our
schema behind our back (tests/integration/test_migrations.py compares the two).

- PostgreSQL: ``registry_events`` (application recorder: ``notification_id bigserial``
  with its unique index), ``registry_snapshots`` (aggregate recorder, no notification
  id), both with the library's autovacuum settings, and the composite type
  ``stored_event_uuid`` the library inserts through (it looks the type up when the
  application starts, so it must exist first). Not created: the library's
  ``es_insert_events_uuid`` function, used only with POSTGRES_ENABLE_DB_FUNCTIONS=y,
  which we must never enable (it drops the table lock that keeps commit order equal to
  notification order); without the function, enabling it fails loudly.
- SQLite: ``stored_events`` (a rowid table: the rowid is the notification id) and
  ``stored_snapshots`` (WITHOUT ROWID). The library names them without the application.

The event-store objects are created "if not exists" so that a database the library set
up before migrations existed is adopted with its events, not refused.

Read models: written out here, not ``metadata.create_all``, so this revision stays what
it was when later revisions change ``registry/readmodels/tables.py``.

Downgrade drops everything, events included: it is for tests and throwaway databases.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PG_AUTOVACUUM = (
    "WITH ("
    "    autovacuum_enabled = true,"
    "    autovacuum_vacuum_threshold = 100000000,"
    "    autovacuum_vacuum_scale_factor = 0.5,"
    "    autovacuum_analyze_threshold = 1000,"
    "    autovacuum_analyze_scale_factor = 0.01"
    ")"
)

PG_EVENT_STORE = [
    # CREATE TYPE has no IF NOT EXISTS; the library swallows DuplicateObject likewise.
    "DO $$ BEGIN "
    "CREATE TYPE public.stored_event_uuid AS (originator_id uuid, "
    "originator_version bigint, topic text, state bytea); "
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "CREATE TABLE IF NOT EXISTS public.registry_events ("
    "originator_id uuid NOT NULL, "
    "originator_version bigint NOT NULL, "
    "topic text, "
    "state bytea, "
    "notification_id bigserial, "
    "PRIMARY KEY (originator_id, originator_version)) " + PG_AUTOVACUUM,
    "CREATE UNIQUE INDEX IF NOT EXISTS registry_events_notification_id_idx "
    "ON public.registry_events (notification_id ASC)",
    "CREATE TABLE IF NOT EXISTS public.registry_snapshots ("
    "originator_id uuid NOT NULL, "
    "originator_version bigint NOT NULL, "
    "topic text, "
    "state bytea, "
    "PRIMARY KEY (originator_id, originator_version)) " + PG_AUTOVACUUM,
]

SQLITE_EVENT_STORE = [
    "CREATE TABLE IF NOT EXISTS stored_events ("
    "originator_id TEXT, "
    "originator_version INTEGER, "
    "topic TEXT, "
    "state BLOB, "
    "PRIMARY KEY (originator_id, originator_version))",
    "CREATE TABLE IF NOT EXISTS stored_snapshots ("
    "originator_id TEXT, "
    "originator_version INTEGER, "
    "topic TEXT, "
    "state BLOB, "
    "PRIMARY KEY (originator_id, originator_version)) "
    "WITHOUT ROWID",
]

PG_DROP_EVENT_STORE = [
    "DROP TABLE IF EXISTS public.registry_snapshots",
    "DROP TABLE IF EXISTS public.registry_events",
    "DROP TYPE IF EXISTS public.stored_event_uuid",
]

SQLITE_DROP_EVENT_STORE = [
    "DROP TABLE IF EXISTS stored_snapshots",
    "DROP TABLE IF EXISTS stored_events",
]


def _dialect() -> str:
    """The database's dialect (works offline too, unlike ``op.get_bind()``)."""
    name: str = op.get_context().dialect.name
    if name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"the registry runs on PostgreSQL or SQLite, not {name}")
    return name


def upgrade() -> None:
    for statement in PG_EVENT_STORE if _dialect() == "postgresql" else SQLITE_EVENT_STORE:
        op.execute(statement)

    op.create_table(
        "rm_tracking",
        sa.Column("projection", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        comment="Last event-log position applied by each projection "
        "(same transaction as its rows).",
    )

    op.create_table(
        "rm_accounts",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("account_uuid", sa.String(36), nullable=False),
        sa.Column("account_type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("holder_name", sa.String(200), nullable=False),
        sa.Column("credit_code", sa.String(18), nullable=False),
        sa.Column("sector", sa.String(16), nullable=False),
        sa.Column("province", sa.String(64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        comment="Account directory: type, holder, sector, province, state.",
    )
    op.create_index("ux_rm_accounts_uuid", "rm_accounts", ["account_uuid"], unique=True)
    op.create_index("ix_rm_accounts_type_sector", "rm_accounts", ["account_type", "sector"])

    op.create_table(
        "rm_holdings",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("unit_class", sa.String(96), primary_key=True),
        sa.Column("unit_type", sa.String(8), nullable=False),
        sa.Column("vintage", sa.Integer, nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("held", sa.BigInteger, nullable=False),
        sa.Column("available", sa.BigInteger, nullable=False),
        comment="Holdings per account and unit class: total = held + available.",
    )

    op.create_table(
        "rm_transactions",
        sa.Column("party", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64)),
        sa.Column("destination", sa.String(64)),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("blocks", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("refusal_reason", sa.String(64), nullable=False),
        sa.Column("refusal_message", sa.Text, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("reversed_by", sa.String(200)),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        comment="Every transaction by (party, client id), completed or refused with its reason.",
    )
    op.create_index("ix_rm_transactions_position", "rm_transactions", ["position"])

    op.create_table(
        "rm_account_history",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("unit_class", sa.String(96), primary_key=True),
        sa.Column("direction", sa.String(8), primary_key=True),
        sa.Column("party", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("counterparty", sa.String(64)),
        sa.Column("unit_type", sa.String(8), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("blocks", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        comment="Every movement per account (DEBIT or CREDIT), keyset-paginated by position.",
    )
    op.create_index(
        "ix_rm_account_history_kind", "rm_account_history", ["account_id", "kind", "position"]
    )
    op.create_index(
        "ix_rm_account_history_time", "rm_account_history", ["account_id", "recorded_at"]
    )

    op.create_table(
        "rm_supply",
        sa.Column("unit_class", sa.String(96), primary_key=True),
        sa.Column("account_type", sa.String(32), primary_key=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("held", sa.BigInteger, nullable=False),
        comment="Units per unit class by holding account type; SURRENDER and "
        "CANCELLATION are the surrendered and cancelled units, 'held' what "
        "exchange holds reserve.",
    )

    op.create_table(
        "rm_issued",
        sa.Column("unit_class", sa.String(96), primary_key=True),
        sa.Column("issued", sa.BigInteger, nullable=False),
        sa.Column("next_serial", sa.BigInteger, nullable=False),
        comment="Units issued per unit class (the left side of the conservation check).",
    )

    op.create_table(
        "rm_serial_blocks",
        sa.Column("unit_class", sa.String(96), primary_key=True),
        sa.Column("first", sa.BigInteger, primary_key=True),
        sa.Column("last", sa.BigInteger, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        comment="Where each serial block is now.",
    )
    op.create_index("ix_rm_serial_blocks_account", "rm_serial_blocks", ["account_id"])

    op.create_table(
        "rm_serial_movements",
        sa.Column("unit_class", sa.String(96), primary_key=True),
        sa.Column("first", sa.BigInteger, primary_key=True),
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("last", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(64)),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("party", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        comment="Every block each transaction moved: the chain of accounts a serial passed.",
    )
    op.create_index("ix_rm_serial_movements_range", "rm_serial_movements", ["unit_class", "last"])


def downgrade() -> None:
    op.drop_index("ix_rm_serial_movements_range", table_name="rm_serial_movements")
    op.drop_table("rm_serial_movements")
    op.drop_index("ix_rm_serial_blocks_account", table_name="rm_serial_blocks")
    op.drop_table("rm_serial_blocks")
    op.drop_table("rm_issued")
    op.drop_table("rm_supply")
    op.drop_index("ix_rm_account_history_time", table_name="rm_account_history")
    op.drop_index("ix_rm_account_history_kind", table_name="rm_account_history")
    op.drop_table("rm_account_history")
    op.drop_index("ix_rm_transactions_position", table_name="rm_transactions")
    op.drop_table("rm_transactions")
    op.drop_table("rm_holdings")
    op.drop_index("ix_rm_accounts_type_sector", table_name="rm_accounts")
    op.drop_index("ux_rm_accounts_uuid", table_name="rm_accounts")
    op.drop_table("rm_accounts")
    op.drop_table("rm_tracking")

    for statement in PG_DROP_EVENT_STORE if _dialect() == "postgresql" else SQLITE_DROP_EVENT_STORE:
        op.execute(statement)

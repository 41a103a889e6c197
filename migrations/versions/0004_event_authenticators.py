"""Event authenticators, and checkpoint links in columns of their own.

Event authenticators: the event table (PostgreSQL ``registry_events``, SQLite
``stored_events``) gains a nullable ``authenticator`` column, where the processes that
write events store an HMAC of each with a key held outside the database
(``registry.integrity.authentication``). Rows already stored have none: the log's head
now is recorded in the new one-row table ``ledger_event_authentication``
(``grandfathered_upto``); events up to it are accepted without an authenticator, every
later one must carry a valid one. Its ``seal`` (an HMAC of the boundary) is written by
the first ledger sealer that runs with the key. Nothing in the events is rewritten.

Checkpoint links: ``ledger_checkpoints`` gains ``previous_position`` and
``previous_digest`` (the key's previous checkpoint, which a version-2 signature covers),
so ``signature`` holds the 64-byte Ed25519 signature again. Revision 0003's code stored
the link inside the signature (a 104-byte "seal": previous position, previous digest,
signature); such rows are split here, nothing re-signed (the signed message is the same).
Downgrade folds them back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEAL_SIZE = 8 + 32 + 64


EVENT_TABLES = {
    "postgresql": ("public.registry_events", "notification_id", "BYTEA"),
    "sqlite": ("stored_events", "rowid", "BLOB"),
}


def upgrade() -> None:
    table, position, binary = EVENT_TABLES[op.get_context().dialect.name]
    op.execute(f"ALTER TABLE {table} ADD COLUMN authenticator {binary}")
    op.create_table(
        "ledger_event_authentication",
        sa.Column("grandfathered_upto", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seal", sa.LargeBinary(32), nullable=True),
        comment="Events up to this log position predate event authenticators.",
    )
    # Under the event table's lock on PostgreSQL, so no write slips in between.
    if op.get_context().dialect.name == "postgresql":
        op.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    op.execute(
        f"INSERT INTO ledger_event_authentication (grandfathered_upto) "
        f"SELECT COALESCE(MAX({position}), 0) FROM {table}"
    )
    op.add_column(
        "ledger_checkpoints", sa.Column("previous_position", sa.BigInteger, nullable=True)
    )
    op.add_column(
        "ledger_checkpoints", sa.Column("previous_digest", sa.LargeBinary(32), nullable=True)
    )
    conn = op.get_bind()
    seals = conn.execute(
        sa.text("SELECT position, key_id, signature FROM ledger_checkpoints")
    ).fetchall()
    for position, key_id, seal in seals:
        seal = bytes(seal)
        if len(seal) != _SEAL_SIZE:
            continue  # a version-1 checkpoint: the signature alone, no link
        conn.execute(
            sa.text(
                "UPDATE ledger_checkpoints SET previous_position = :before, "
                "previous_digest = :before_digest, signature = :signature "
                "WHERE position = :position AND key_id = :key_id"
            ),
            {
                "before": int.from_bytes(seal[:8], "big", signed=True),
                "before_digest": seal[8:40],
                "signature": seal[40:],
                "position": position,
                "key_id": key_id,
            },
        )


def downgrade() -> None:
    conn = op.get_bind()
    linked = conn.execute(
        sa.text(
            "SELECT position, key_id, signature, previous_position, previous_digest "
            "FROM ledger_checkpoints WHERE previous_digest IS NOT NULL"
        )
    ).fetchall()
    for position, key_id, signature, before, before_digest in linked:
        conn.execute(
            sa.text(
                "UPDATE ledger_checkpoints SET signature = :seal "
                "WHERE position = :position AND key_id = :key_id"
            ),
            {
                "seal": int(before).to_bytes(8, "big", signed=True)
                + bytes(before_digest)
                + bytes(signature),
                "position": position,
                "key_id": key_id,
            },
        )
    with op.batch_alter_table("ledger_checkpoints") as checkpoints:
        checkpoints.drop_column("previous_digest")
        checkpoints.drop_column("previous_position")
    op.drop_table("ledger_event_authentication")
    table, _, _ = EVENT_TABLES[op.get_context().dialect.name]
    op.execute(f"ALTER TABLE {table} DROP COLUMN authenticator")

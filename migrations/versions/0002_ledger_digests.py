"""Ledger digests: the digest chain over the event log and its signed checkpoints.

``ledger_digests``: one row per event, keyed by its log position (notification id;
SQLite: rowid), with its ordinal in the chain, its identity, its hash and the chain
digest after it. ``ledger_checkpoints``: Ed25519-signed (position, digest) statements.
Both are written only by ``registry.integrity.ledger.extend_chain``; see
``registry/integrity/`` for the format.

Written out, not ``metadata.create_all``, so this revision stays what it was when later
revisions change ``registry/integrity/ledger.py``. The embedded SQLite store applies it
at start-up like every revision (``build_registry`` migrates it).

Downgrade drops the chain and its checkpoints (the events are untouched; the chain can
be rebuilt from them, but checkpoints signed earlier are lost).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_digests",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("originator_id", sa.Uuid, nullable=False),
        sa.Column("originator_version", sa.BigInteger, nullable=False),
        sa.Column("event_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        comment="Digest chain over the event log: one row per event, by log position.",
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        comment="Signed checkpoints of the digest chain (Ed25519).",
    )


def downgrade() -> None:
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_digests")

"""Where the last ledger verification ended, so the next one can start there.

A new one-row table ``ledger_verified``: the last signed checkpoint a successful
verification matched (position, the chain's seq and digest there, the checkpoint's key
and signature), when, and when the last full run succeeded. The worker's hourly run
resumes from it (``registry.integrity.verify``); a full run re-derives everything.
Nothing else changes; downgrade drops the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_verified",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("full_at", sa.DateTime(timezone=True), nullable=True),
        comment="Where the last verification ended: the next incremental run starts here.",
    )


def downgrade() -> None:
    op.drop_table("ledger_verified")

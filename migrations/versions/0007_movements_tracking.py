"""The serial movements get a projection of their own: a tracking row ``movements``.

Until now the ``serials`` projection wrote both ``rm_serial_blocks`` (where each block
is) and ``rm_serial_movements`` (every block each transaction moved) under one tracking
row. They are two projections now, so a catch-up writes them on two connections at once
(docs/performance.md, "The movements in a lane of their own"). Both tables were written
up to ``serials``' position, so the new row starts there: the movements already written
are not written again. A registry with no ``serials`` row yet gets none (the runner
adds both at position 0). No table changes, no stored event is touched.

Downgrade deletes the row, once both projections stand at the same position (the
version before writes both tables from ``serials``' position); otherwise it refuses and
says to run the projection worker first.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO rm_tracking (projection, position) "
        "SELECT 'movements', position FROM rm_tracking WHERE projection = 'serials' "
        "AND NOT EXISTS (SELECT 1 FROM rm_tracking WHERE projection = 'movements')"
    )


def downgrade() -> None:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT projection, position FROM rm_tracking "
            "WHERE projection IN ('serials', 'movements')"
        )
    )
    positions = {str(name): int(position) for name, position in rows}
    serials, movements = positions.get("serials", 0), positions.get("movements", 0)
    if serials != movements:
        raise CommandError(
            f"cannot downgrade below 0007: the serials projection is at position {serials} "
            f"and the movements projection at {movements}; run `registry project --once` "
            "so both reach the head of the log, then downgrade"
        )
    op.execute("DELETE FROM rm_tracking WHERE projection = 'movements'")

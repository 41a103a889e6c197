"""Alembic's start-up chatter kept out of the registry's logs.

Alembic logs at INFO the set-up of each of its plugins (seven lines, on its first
import) and, for every revision check, "Context impl SQLiteImpl." and "Will assume ...
DDL.": noise in every ``registry serve`` start. The steps a migration applies ("Running
upgrade 0003 -> 0004, ...") and anything at WARNING or above still pass. Imported by
``registry.persistence.migrate`` before it imports Alembic, so the filters are there first.
"""

from __future__ import annotations

import logging

QUIETED = ("alembic.runtime.plugins", "alembic.runtime.migration")


class MigrationStepsOnly(logging.Filter):
    """Passes warnings and the "Running upgrade/downgrade" lines; drops other INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or str(record.msg).startswith("Running ")


def quiet_alembic() -> None:
    """Idempotent: the filters go on Alembic's own loggers, whatever handlers (text or
    JSON logs) the process configures."""
    for name in QUIETED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MigrationStepsOnly) for f in logger.filters):
            logger.addFilter(MigrationStepsOnly())


quiet_alembic()

"""What the servicers talk to: the write model and the read models of one store."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from registry.application import Registry
from registry.domain.errors import InvalidCommand
from registry.observability.metrics import RegistryMetrics
from registry.persistence.eventlog import EventLog
from registry.readmodels.queries import ReadModels
from registry.readmodels.runner import ReadModelTimeout

READ_WAIT_CAP_SECONDS = 5.0


@dataclass(frozen=True)
class Backend:
    registry: Registry
    read_models: ReadModels
    metrics: RegistryMetrics | None = None
    """Where the servicers count what they did (settlements by outcome), if anywhere."""

    def wait_for(
        self, position: int, context: grpc.ServicerContext, field: str = "min_position"
    ) -> None:
        """Read your writes: wait until the read models include ``position``, within
        the call's deadline and at most 5 s.

        Only a position the log has reached can be waited for: a write returned it, so
        the projections will reach it. One beyond the head (no write returned it) would
        park a server thread for the whole wait, for nothing: it is refused at once."""
        if position < 0:
            raise InvalidCommand(
                f"{field} must not be negative, got {position}",
                reason="INVALID_POSITION",
                field=field,
            )
        if position == 0:
            return
        try:  # usually the projections are there already: one query, no head probe
            self.read_models.wait_for(position, timeout=0)
            return
        except ReadModelTimeout:
            pass
        head = self.head()
        if position > head:
            raise InvalidCommand(
                f"{field} {position} is beyond the log's head ({head}): pass the position "
                "a write returned",
                reason="INVALID_POSITION",
                field=field,
                head=head,
            )
        remaining = context.time_remaining()
        timeout = (
            READ_WAIT_CAP_SECONDS
            if remaining is None
            else min(READ_WAIT_CAP_SECONDS, max(remaining - 0.05, 0.0))
        )
        self.read_models.wait_for(position, timeout=timeout)

    def head(self) -> int:
        """The log's last position: one index probe on the read pool (not through the
        event store's lock), via SQLAlchemy so a dropped connection is the retryable
        DATABASE_CONNECTION_LOST."""
        log = EventLog.of(self.registry.recorder)
        with self.read_models.reads.connect() as conn:
            return log.latest_position(conn)

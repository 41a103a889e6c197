"""What the servicers talk to: the write model and the read models of one store."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from registry.application import Registry
from registry.observability.metrics import RegistryMetrics
from registry.readmodels.queries import ReadModels

READ_WAIT_CAP_SECONDS = 5.0


@dataclass(frozen=True)
class Backend:
    registry: Registry
    read_models: ReadModels
    metrics: RegistryMetrics | None = None
    """Where the servicers count what they did (settlements by outcome), if anywhere."""

    def wait_for(self, position: int, context: grpc.ServicerContext) -> None:
        """Read your writes: wait until the read models include ``position``, within
        the call's deadline and at most 5 s."""
        if position <= 0:
            return
        remaining = context.time_remaining()
        timeout = READ_WAIT_CAP_SECONDS if remaining is None else min(
            READ_WAIT_CAP_SECONDS, max(remaining - 0.05, 0.0))
        self.read_models.wait_for(position, timeout=timeout)

"""Duties on a clock: release exchange holds past their timeout, and record proposals
past their validity as expired.

Run by whichever process runs the projections (the worker holding the projection
lease, or an embedded server), so exactly one process does it at a time and a
restart anywhere picks it up. Both duties are idempotent: an expiry already recorded
is answered, not repeated.

Holds and proposals are found without scanning every one ever made: an index of the
open holds, by expiry, and of the pending proposals is kept up to date from the log's
hold and proposal events (read incrementally by topic), so each sweep costs a small
query or two plus the expiries that are due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from registry.domain.errors import RegistryError
from registry.domain.holds import Hold
from registry.domain.proposals import Proposal
from registry.domain.transactions import SYSTEM
from registry.observability.metrics import RegistryMetrics
from registry.persistence.aggregates import TopicFollower, as_uuid

if TYPE_CHECKING:
    from registry.application.registry import Registry
    from registry.observability.worker import WorkerMetrics

log = logging.getLogger("registry.housekeeping")

HOLD_TOPICS = [Hold.Placed.TOPIC, Hold.Settled.TOPIC, Hold.Released.TOPIC, Hold.Expired.TOPIC]
PROPOSAL_TOPICS = [
    Proposal.Proposed.TOPIC,
    Proposal.Approved.TOPIC,
    Proposal.Rejected.TOPIC,
    Proposal.Expired.TOPIC,
]
"""A proposal is pending from its Proposed event until one of the others."""


@dataclass(frozen=True)
class OpenHold:
    party: str
    hold_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Tick:
    """What one round did."""

    holds_expired: int = 0
    proposals_expired: int = 0


class Housekeeping:
    """Expires due holds every ``hold_seconds`` and due proposals every
    ``proposal_seconds`` (``tick`` does nothing between, so call it often)."""

    def __init__(
        self,
        registry: Registry,
        hold_seconds: float = 5.0,
        proposal_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: RegistryMetrics | None = None,
        verify: Callable[[], None] | None = None,
        verify_seconds: float = 0,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.worker_metrics: WorkerMetrics | None = None
        """Counts each sweep, what it expired and its failures (the worker sets it)."""
        self.verify = verify
        """Re-verifies the ledger, in a thread of its own: it reads the whole log."""
        self.verify_seconds = verify_seconds
        self._verify_at = float("-inf")
        self._verifying: threading.Thread | None = None
        self.hold_seconds = hold_seconds
        self.proposal_seconds = proposal_seconds
        self.monotonic = monotonic
        self._hold_events = TopicFollower(registry.recorder, HOLD_TOPICS)
        self._open: dict[UUID, OpenHold] = {}
        self._proposal_events = TopicFollower(registry.recorder, PROPOSAL_TOPICS)
        self._pending: dict[UUID, None] = {}
        """Proposals that may still be pending, in the order they were proposed."""
        self._holds_at = self._proposals_at = float("-inf")

    def tick(self) -> Tick:
        now = self.monotonic()
        holds = proposals = 0
        if now - self._holds_at >= self.hold_seconds:
            self._holds_at = now
            holds = self._sweep("holds", self.expire_holds)
        if now - self._proposals_at >= self.proposal_seconds:
            self._proposals_at = now
            proposals = self._sweep("proposals", self.expire_proposals)
        if holds or proposals:
            log.info("expired %d hold(s) and %d proposal(s)", holds, proposals)
        if holds and self.metrics is not None:
            self.metrics.observe_hold_expiries(holds)
        if (
            self.verify is not None
            and self.verify_seconds > 0
            and now - self._verify_at >= self.verify_seconds
            and (self._verifying is None or not self._verifying.is_alive())
        ):
            self._verify_at = now
            self._verifying = threading.Thread(
                target=self._verify, daemon=True, name="ledger-verify"
            )
            self._verifying.start()
        return Tick(holds, proposals)

    def _sweep(self, duty: str, sweep: Callable[[], int]) -> int:
        """``sweep()``, counted in the worker's metrics (a failure too, then raised)."""
        try:
            expired = sweep()
        except Exception:
            if self.worker_metrics is not None:
                self.worker_metrics.sweep_failed(duty)
            raise
        if self.worker_metrics is not None:
            self.worker_metrics.swept(duty, expired)
        return expired

    def _verify(self) -> None:
        assert self.verify is not None
        try:
            self.verify()
        except Exception:
            log.exception("ledger verification could not run")

    def expire_holds(self) -> int:
        """Expire every open hold past its timeout; how many this call expired."""
        self._catch_up()
        now = self.registry.clock()
        expired = 0
        for hold_uuid, hold in sorted(self._open.items(), key=lambda i: i[1].expires_at):
            if hold.expires_at > now:
                break
            try:
                result = self.registry.expire_hold(SYSTEM, hold.party, hold.hold_id)
            except RegistryError as error:  # settled or released meanwhile
                log.info("hold %s:%s not expired: %s", hold.party, hold.hold_id, error)
            else:
                expired += not result.replayed
            self._open.pop(hold_uuid, None)
        return expired

    def expire_proposals(self) -> int:
        """Record every pending proposal past its validity as expired; how many."""
        for notification in self._proposal_events.read():
            proposal_uuid = as_uuid(notification.originator_id)
            if notification.topic == Proposal.Proposed.TOPIC:
                self._pending[proposal_uuid] = None
            else:
                self._pending.pop(proposal_uuid, None)
        expired = self.registry.proposals.expire_due(among=list(self._pending))
        for view in expired:
            self._pending.pop(Proposal.id_for(view.party, view.proposal_id), None)
        return len(expired)

    def _catch_up(self) -> None:
        """Read the hold events the log gained since the last sweep: opened holds in,
        ended out."""
        mapper = self.registry.mapper
        for notification in self._hold_events.read():
            hold_uuid = as_uuid(notification.originator_id)
            if notification.topic == Hold.Placed.TOPIC:
                event = mapper.to_domain_event(notification)
                assert isinstance(event, Hold.Placed)
                self._open[hold_uuid] = OpenHold(event.party, event.hold_id, event.expires_at)
            else:
                self._open.pop(hold_uuid, None)

"""The market halt: one aggregate for the registry (fixed id). While halted, exchange
settlement (``registry.domain.restrictions.HALTED_KINDS``) is refused; surrender,
allocation and every other kind go on. What the three restrictions share, and the
guards, are in ``registry.domain.restrictions``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import MarketAlreadyHalted, MarketNotHalted
from registry.domain.ids import NAMESPACE
from registry.domain.reasons import check_reason
from registry.domain.restrictions import RestrictionHistory, aware, change_entry, principal_name
from registry.domain.transactions import Principal


class MarketStatus(StrEnum):
    OPEN = "OPEN"
    HALTED = "HALTED"


class MarketHalt(RestrictionHistory, Aggregate):
    """The registry's one market-halt switch (fixed id)."""

    TOPIC = "registry.MarketHalt"
    ID = uuid5(NAMESPACE, "market-halt")

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.status_name = MarketStatus.OPEN.value
        self.reason = ""
        self.halted_by = ""
        self.halted_at: datetime | None = None
        self.lifted_by = ""
        self.lifted_at: datetime | None = None
        self.lift_reason = ""

    @staticmethod
    def id_for() -> UUID:
        return MarketHalt.ID

    @property
    def status(self) -> MarketStatus:
        return MarketStatus(self.status_name)

    @property
    def is_halted(self) -> bool:
        return self.status_name == MarketStatus.HALTED.value

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.MarketHalt.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.MarketHalt.Started"

        def apply(self, halt: MarketHalt) -> None:
            halt.status_name = MarketStatus.OPEN.value

    class Halted(Aggregate.Event):
        TOPIC = "registry.MarketHalt.Halted"
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, halt: MarketHalt) -> None:
            halt.status_name = MarketStatus.HALTED.value
            halt.reason = self.reason
            halt.halted_by = self.principal
            halt.halted_at = self.at
            halt._log(
                change_entry("HALTED", self.at, self.principal, self.reason, proposal=self.proposal)
            )

    class Lifted(Aggregate.Event):
        TOPIC = "registry.MarketHalt.Lifted"
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, halt: MarketHalt) -> None:
            halt.status_name = MarketStatus.OPEN.value
            halt.lifted_by = self.principal
            halt.lifted_at = self.at
            halt.lift_reason = self.reason
            halt._log(
                change_entry("LIFTED", self.at, self.principal, self.reason, proposal=self.proposal)
            )

    # -- creation and commands -----------------------------------------------------

    @classmethod
    def start(cls) -> MarketHalt:
        """The switch, open; the application starts it on the first halt."""
        return cls._create(cls.Started, id=cls.ID)

    def halt(
        self, *, reason: str, principal: Principal | str, at: datetime, proposal: str = ""
    ) -> bool:
        """Halt settlement; True if this call did, False for a retry (already halted
        for the same reason). Halted for another reason: refused, naming that halt."""
        check_reason(reason)
        aware(at)
        if self.is_halted:
            if reason == self.reason:
                return False
            raise MarketAlreadyHalted(
                f"the market is already halted since {self.halted_at} by {self.halted_by}: "
                f"{self.reason}",
                halted_at=self.halted_at,
                halted_by=self.halted_by,
            )
        self.trigger_event(
            self.Halted,
            reason=reason,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
        )
        return True

    def lift(
        self, *, reason: str, principal: Principal | str, at: datetime, proposal: str = ""
    ) -> bool:
        """Resume settlement; True if this call did, False for a retry (the last lift
        had the same reason)."""
        check_reason(reason)
        aware(at)
        if not self.is_halted:
            if self.lifted_at is not None and reason == self.lift_reason:
                return False
            raise MarketNotHalted("the market is not halted", status=self.status_name)
        self.trigger_event(
            self.Lifted,
            reason=reason,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
        )
        return True

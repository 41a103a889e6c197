"""Compliance obligations, one per (compliance account, compliance year).

This holds the verified emissions of the year and what was surrendered against them;
the rules by year and sector and the surrender deadline build on it.
"""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import InvalidCommand
from registry.domain.ids import NAMESPACE

MIN_YEAR = 2019
MAX_YEAR = 2100


def check_year(year: int) -> int:
    if not isinstance(year, int) or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidCommand(f"compliance year must be {MIN_YEAR}..{MAX_YEAR}, got {year!r}",
                             reason="INVALID_COMPLIANCE_YEAR")
    return year


class ComplianceObligation(Aggregate):
    TOPIC = "registry.ComplianceObligation"

    verified_emissions: int | None = None
    """Tonnes CO2e as verified, None until a verifier's figure is recorded. A class
    default too, so snapshots taken before emissions were recorded still restore."""

    def __init__(self) -> None:
        self.account_id = ""
        self.year = 0
        self.surrendered: dict[str, int] = {}
        self.verified_emissions = None

    @staticmethod
    def id_for(account_id: str, year: int) -> UUID:
        return uuid5(NAMESPACE, f"obligation:{account_id}:{year}")

    @property
    def total_surrendered(self) -> int:
        return sum(self.surrendered.values())

    class Created(Aggregate.Created):
        TOPIC = "registry.ComplianceObligation.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.ComplianceObligation.Started"
        account_id: str
        year: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.account_id = self.account_id
            obligation.year = self.year

    class UnitsSurrendered(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.UnitsSurrendered"
        transaction_id: UUID
        unit_type: str
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation._add(self.unit_type, self.quantity)

    class SurrenderReversed(Aggregate.Event):
        TOPIC = "registry.ComplianceObligation.SurrenderReversed"
        transaction_id: UUID
        unit_type: str
        quantity: int

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation._add(self.unit_type, -self.quantity)

    class EmissionsVerified(Aggregate.Event):
        """The verified figure for the year: the first one, or a correction of it."""

        TOPIC = "registry.ComplianceObligation.EmissionsVerified"
        emissions: int
        reason: str
        principal: str

        def apply(self, obligation: ComplianceObligation) -> None:
            obligation.verified_emissions = self.emissions

    def _add(self, unit_type: str, quantity: int) -> None:
        self.surrendered = {**self.surrendered,
                            unit_type: self.surrendered.get(unit_type, 0) + quantity}

    @classmethod
    def start(cls, account_id: str, year: int) -> ComplianceObligation:
        return cls._create(cls.Started, id=cls.id_for(account_id, year),
                           account_id=account_id, year=year)

    def record_surrender(self, transaction_id: UUID, unit_type: str, quantity: int) -> None:
        self.trigger_event(self.UnitsSurrendered, transaction_id=transaction_id,
                           unit_type=unit_type, quantity=quantity)

    def reverse_surrender(self, transaction_id: UUID, unit_type: str, quantity: int) -> None:
        self.trigger_event(self.SurrenderReversed, transaction_id=transaction_id,
                           unit_type=unit_type, quantity=quantity)

    def record_emissions(self, emissions: int, reason: str, principal: str) -> bool:
        """Record the verified figure; False (and no event) when it is already the figure,
        so a repeated upload changes nothing and a different figure is a correction."""
        if isinstance(emissions, bool) or not isinstance(emissions, int) or emissions < 0:
            raise InvalidCommand(f"verified emissions must be a whole number >= 0, "
                                 f"got {emissions!r}", reason="INVALID_EMISSIONS")
        if emissions == self.verified_emissions:
            return False
        self.trigger_event(self.EmissionsVerified, emissions=emissions, reason=reason,
                           principal=principal)
        return True

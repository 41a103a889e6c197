"""The national serial counter: one per unit class, so a serial is never issued twice."""

from __future__ import annotations

from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.ids import NAMESPACE
from registry.domain.units import SerialBlock, UnitClass


class SerialCounter(Aggregate):
    """Saved with every issuance, so concurrent issuances of one class cannot overlap."""

    TOPIC = "registry.SerialCounter"

    def __init__(self) -> None:
        self.unit_class_key = ""
        self.next_serial = 1
        self.issued = 0

    @staticmethod
    def id_for(unit_class: UnitClass) -> UUID:
        return uuid5(NAMESPACE, f"serials:{unit_class.key}")

    @property
    def unit_class(self) -> UnitClass:
        return UnitClass.from_key(self.unit_class_key)

    class Created(Aggregate.Created):
        TOPIC = "registry.SerialCounter.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.SerialCounter.Started"
        unit_class: str

        def apply(self, counter: SerialCounter) -> None:
            counter.unit_class_key = self.unit_class

    class BlockIssued(Aggregate.Event):
        TOPIC = "registry.SerialCounter.BlockIssued"
        transaction_id: UUID
        first: int
        last: int

        def apply(self, counter: SerialCounter) -> None:
            counter.next_serial = self.last + 1
            counter.issued += self.last - self.first + 1

    @classmethod
    def start(cls, unit_class: UnitClass) -> SerialCounter:
        return cls._create(cls.Started, id=cls.id_for(unit_class), unit_class=unit_class.key)

    def issue(self, quantity: int, transaction_id: UUID) -> SerialBlock:
        block = SerialBlock(self.unit_class, self.next_serial, self.next_serial + quantity - 1)
        self.trigger_event(
            self.BlockIssued, transaction_id=transaction_id, first=block.first, last=block.last
        )
        return block

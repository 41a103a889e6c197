"""How domain values not native to JSON are stored in events and snapshots."""

from __future__ import annotations

from eventsourcing.persistence import Transcoding

from registry.domain.units import SerialBlock, UnitClass


class SerialBlockTranscoding(Transcoding):
    """A serial block as ``[unit class key, first, last]``: compact and readable."""

    type = SerialBlock
    name = "block"

    def encode(self, obj: SerialBlock) -> list[object]:
        return [obj.unit_class.key, obj.first, obj.last]

    def decode(self, data: list[object]) -> SerialBlock:
        key, first, last = data
        assert isinstance(key, str) and isinstance(first, int) and isinstance(last, int)
        return SerialBlock(UnitClass.from_key(key), first, last)

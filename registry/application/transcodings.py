"""How domain values not native to JSON are stored in events and snapshots."""

from __future__ import annotations

from functools import lru_cache

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
        return SerialBlock(_unit_class(key), first, last)


_unit_class = lru_cache(maxsize=4096)(UnitClass.from_key)
"""``UnitClass.from_key``, cached: a loaded holding has thousands of blocks of a few
classes, and parsing a key costs three times the rest of a block's decoding. A unit
class is frozen, so one instance can be shared."""

"""Serial blocks: FIFO split, merge, exact removal. No I/O."""

import pytest

from registry.domain import units
from registry.domain.errors import InsufficientUnits, InvalidCommand, UnitsNotHeld
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

CEA24 = UnitClass(UnitType.CEA, 2024)
CEA25 = UnitClass(UnitType.CEA, 2025)
CCER = UnitClass(UnitType.CCER, 2024, "P-1")


def b(unit_class: UnitClass, first: int, last: int) -> SerialBlock:
    return SerialBlock(unit_class, first, last)


def test_split_takes_the_lowest_serials() -> None:
    head, rest = b(CEA25, 10, 19).split(3)
    assert head == b(CEA25, 10, 12)
    assert rest == b(CEA25, 13, 19)
    assert b(CEA25, 10, 19).split(10) == (b(CEA25, 10, 19), None)
    with pytest.raises(ValueError):
        b(CEA25, 10, 19).split(11)


def test_merge_joins_adjacent_blocks_of_one_class_only() -> None:
    merged = units.merge([b(CEA25, 6, 10), b(CEA25, 1, 5), b(CEA24, 11, 12), b(CEA25, 12, 13)])
    assert merged == (b(CEA24, 11, 12), b(CEA25, 1, 10), b(CEA25, 12, 13))


def test_merge_refuses_overlaps() -> None:
    with pytest.raises(ValueError):
        units.merge([b(CEA25, 1, 5), b(CEA25, 5, 9)])


def test_take_is_fifo_oldest_class_then_lowest_serial() -> None:
    holding = units.merge([b(CEA25, 1, 5), b(CEA24, 50, 52), b(CCER, 1, 9)])
    taken, remaining = units.take(holding, UnitSelector(UnitType.CEA), 5)
    assert taken == (b(CEA24, 50, 52), b(CEA25, 1, 2))
    assert remaining == (b(CCER, 1, 9), b(CEA25, 3, 5))


def test_take_with_vintage_only_touches_that_vintage() -> None:
    holding = units.merge([b(CEA25, 1, 5), b(CEA24, 50, 52)])
    taken, _ = units.take(holding, UnitSelector(UnitType.CEA, 2025), 2)
    assert taken == (b(CEA25, 1, 2),)


def test_take_more_than_available_changes_nothing() -> None:
    holding = (b(CEA25, 1, 5),)
    with pytest.raises(InsufficientUnits) as raised:
        units.take(holding, UnitSelector(UnitType.CEA), 6)
    assert raised.value.reason == "INSUFFICIENT_UNITS"
    assert raised.value.metadata == {"requested": "6", "available": "5", "units": "CEA"}
    assert holding == (b(CEA25, 1, 5),)


def test_remove_exact_blocks_splits_around_them() -> None:
    holding = (b(CEA25, 1, 10),)
    assert units.remove(holding, [b(CEA25, 4, 6)]) == (b(CEA25, 1, 3), b(CEA25, 7, 10))
    with pytest.raises(UnitsNotHeld):
        units.remove(holding, [b(CEA25, 9, 11)])


def test_unit_class_validation_and_keys() -> None:
    assert UnitClass.from_key("CCER/2024/P-1") == CCER
    assert CEA25.key == "CEA/2025"
    with pytest.raises(InvalidCommand) as raised:
        UnitClass("XYZ", 2025)  # type: ignore[arg-type]
    assert raised.value.reason == "UNKNOWN_UNIT_TYPE"
    with pytest.raises(InvalidCommand) as raised:
        UnitClass(UnitType.CCER, 2024)
    assert raised.value.reason == "MISSING_PROJECT"
    with pytest.raises(InvalidCommand) as raised:
        UnitClass(UnitType.CEA, 1999)
    assert raised.value.reason == "INVALID_VINTAGE"
    for malformed in ("CEA", "CEA/twenty", "CCER/2024/P-1/extra"):
        with pytest.raises(InvalidCommand) as raised:
            UnitClass.from_key(malformed)
        assert raised.value.reason == "INVALID_UNIT_CLASS"


def test_selector_matching() -> None:
    assert UnitSelector(UnitType.CCER).matches(CCER)
    assert UnitSelector(UnitType.CCER, 2024, "P-1").matches(CCER)
    assert not UnitSelector(UnitType.CCER, 2024, "P-2").matches(CCER)
    assert not UnitSelector(UnitType.CEA).matches(CCER)

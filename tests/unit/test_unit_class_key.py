"""``UnitClass.key`` is made once, when the class is: the same text as before, and a
unit class compares, hashes, orders, shows, copies and pickles as it did."""

from __future__ import annotations

import copy
import dataclasses
import pickle

from registry.domain.units import UnitClass, UnitType


def test_the_key_is_made_once_and_nothing_else_changes() -> None:
    cea = UnitClass(UnitType.CEA, 2025)
    ccer = UnitClass("CCER", 2024, "P-0001")  # type: ignore[arg-type]
    assert (cea.key, ccer.key, str(ccer)) == ("CEA/2025", "CCER/2024/P-0001", "CCER/2024/P-0001")
    assert UnitClass.from_key(ccer.key) == ccer
    assert hash(cea) == hash((UnitType.CEA, 2025, ""))  # the three fields', as generated
    assert repr(cea) == "UnitClass(unit_type=<UnitType.CEA: 'CEA'>, vintage=2025, project='')"
    assert sorted([cea, ccer, UnitClass(UnitType.CEA, 2024)]) == sorted(
        [cea, ccer, UnitClass(UnitType.CEA, 2024)], key=lambda u: (u.unit_type, u.vintage)
    )
    for twin in (pickle.loads(pickle.dumps(ccer)), copy.deepcopy(ccer), copy.copy(ccer)):
        assert twin == ccer and twin.key == ccer.key
    assert dataclasses.replace(cea, vintage=2030).key == "CEA/2030"
    assert dataclasses.astuple(cea)[:3] == (UnitType.CEA, 2025, "")

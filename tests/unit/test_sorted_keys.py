"""``SortedKeys`` behaves as one sorted list, across chunk splits and emptied chunks."""

from __future__ import annotations

from bisect import bisect_right

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.readmodels.serial_locations import SortedKeys


def from_floor(keys: list[int], low: int, high: int) -> list[int]:
    """The reference: what the serials projection's flat list did (``bisect`` then walk)."""
    start = max(0, bisect_right(keys, low) - 1)
    end = start
    while end < len(keys) and keys[end] <= high:
        end += 1
    return keys[start:end]


class Small(SortedKeys):
    CHUNK = 2  # chunks of up to 4 keys: splits and emptied chunks within a few steps


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "look"]), st.integers(0, 60), st.integers(0, 20)),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(initial=st.sets(st.integers(0, 60), max_size=30), ops=OPS)
def test_it_answers_as_a_sorted_list_does(
    initial: set[int], ops: list[tuple[str, int, int]]
) -> None:
    keys = Small(initial)
    model = sorted(initial)
    for op, key, span in ops:
        if op == "add" and key not in model:
            keys.add(key)
            model = sorted([*model, key])
        elif op == "remove" and key in model:
            keys.remove(key)
            model.remove(key)
        else:
            assert keys.from_floor(key, key + span) == from_floor(model, key, key + span)
        assert list(keys) == model
        assert len(keys) == len(model)
        assert all(0 < len(chunk) <= 4 for chunk in keys.chunks)
        assert keys.mins == [chunk[0] for chunk in keys.chunks]


def test_removing_a_key_not_there_is_a_key_error() -> None:
    keys = SortedKeys([5, 9])
    with pytest.raises(KeyError):
        keys.remove(7)
    with pytest.raises(KeyError):
        SortedKeys().remove(1)

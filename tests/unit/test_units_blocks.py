"""Persistent holdings (``units.Blocks``): the same blocks as the list algorithm, old
versions unchanged by updates, and snapshots in the shape they always had. No I/O."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from copy import deepcopy
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.domain import units
from registry.domain.accounts import Account, AccountType, Holder
from registry.domain.errors import UnitsNotHeld
from registry.domain.units import Blocks, SerialBlock, UnitClass, UnitSelector, UnitType
from registry.integrity.snapshots import registry_mapper

CLASSES = (
    UnitClass(UnitType.CCER, 2024, "P-1"),
    UnitClass(UnitType.CEA, 2024),
    UnitClass(UnitType.CEA, 2025),
)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chunks of at most 8 blocks and branches of at most 4 chunks, updated block by
    block: every split, join and shrink of a Blocks, at both levels, is reached by
    holdings of a few dozen blocks."""
    monkeypatch.setattr(units, "PLAIN", 8)
    monkeypatch.setattr(units, "CHUNK", 8)
    monkeypatch.setattr(units, "BRANCH", 4)
    monkeypatch.setattr(units, "_BRANCH_FILL", 2)
    monkeypatch.setattr(units, "_BRANCH_LOW", 2)
    monkeypatch.setattr(units, "_FILL", 4)
    monkeypatch.setattr(units, "_LOW", 2)
    monkeypatch.setattr(units, "_BULK", 1)
    yield


def spaced(count: int, unit_class: UnitClass = CLASSES[2]) -> tuple[SerialBlock, ...]:
    """``count`` blocks with a gap after each: none joins its neighbour."""
    return tuple(SerialBlock(unit_class, 10 * i + 1, 10 * i + 5) for i in range(count))


def check_structure(holding: units.Holding, expected: list[SerialBlock]) -> None:
    """``holding`` reads as ``expected`` in every way a tuple is read, and a Blocks
    keeps its own bookkeeping right."""
    assert holding == tuple(expected) and tuple(expected) == holding
    assert not holding != tuple(expected)  # noqa: SIM202 (``!=`` is under test)
    assert list(holding) == expected and len(holding) == len(expected)
    assert bool(holding) is bool(expected)
    assert hash(holding) == hash(tuple(expected))
    assert list(reversed(holding)) == expected[::-1]
    assert holding[1:-1] == tuple(expected[1:-1])
    if expected:
        assert holding[0] == expected[0] and holding[-1] == expected[-1]
        middle = len(expected) // 2
        assert holding[middle] == expected[middle] and expected[middle] in holding
    if type(holding) is Blocks:
        branches = tuple.__getitem__(holding, slice(None))
        assert all(0 < len(b.chunks) <= units.BRANCH for b in branches)
        for branch in branches:
            assert all(0 < len(c) <= units.CHUNK for c in branch.chunks)
            assert branch.starts == tuple((c[0].unit_class, c[0].first) for c in branch.chunks)
            assert branch.length == sum(map(len, branch.chunks))
        assert holding._starts == tuple(b.starts[0] for b in branches)
        assert holding._len == sum(b.length for b in branches)


part = st.tuples(
    st.integers(0, len(CLASSES) - 1),
    st.integers(1, 400),
    st.integers(0, 6),
    st.integers(0, 10_000),
)
operation = st.tuples(
    st.sampled_from(["add", "remove", "remove"]), st.lists(part, min_size=1, max_size=3)
)


def blocks_for(
    kind: str, parts: list[tuple[int, int, int, int]], held: list[SerialBlock]
) -> list[SerialBlock]:
    """The blocks of one movement: removals mostly of parts of held blocks."""
    made = []
    for class_index, first, length, pick in parts:
        if kind == "remove" and held and pick % 5:
            block = held[pick % len(held)]
            low = block.first + pick % block.quantity
            made.append(SerialBlock(block.unit_class, low, min(block.last, low + length)))
        else:
            made.append(SerialBlock(CLASSES[class_index], first, first + length))
    return made


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 40), st.lists(operation, max_size=60))
def test_blocks_equal_the_list_algorithm_and_old_versions_stay(
    small_chunks: None, start: int, operations: list[tuple[str, list[tuple[int, int, int, int]]]]
) -> None:
    """Random credits and debits of one to three blocks (valid, overlapping and missing
    ones) give a Blocks the very blocks the list algorithm gives, or the same refusal;
    every version made on the way still reads as it did when it was made."""
    expected = list(spaced(start))
    holding = units.add((), expected)
    versions: list[tuple[units.Holding, tuple[SerialBlock, ...]]] = [(holding, tuple(expected))]
    for kind, parts in operations:
        blocks = blocks_for(kind, parts, expected)
        reference = list(expected)
        try:
            if kind == "add":
                units.add_into(reference, blocks)
            else:
                units.remove_from(reference, blocks)
        except (ValueError, UnitsNotHeld) as refused:
            with pytest.raises(type(refused)):
                (units.add if kind == "add" else units.remove)(holding, blocks)
            check_structure(holding, expected)  # a refused update changed nothing
            continue
        holding = (units.add if kind == "add" else units.remove)(holding, blocks)
        expected = reference
        check_structure(holding, expected)
        versions.append((holding, tuple(expected)))
    for version, blocks in versions:
        check_structure(version, list(blocks))


def test_a_large_holding_splits_and_joins_chunks_as_it_grows_and_shrinks() -> None:
    """At the real sizes: thousands of single additions and removals."""
    holding = units.add((), spaced(4 * units.PLAIN))
    assert type(holding) is Blocks
    expected = list(holding)
    for serial in (7, 9):  # two new blocks between each two: chunks triple and split
        for i in range(4 * units.PLAIN):
            block = SerialBlock(CLASSES[2], 10 * i + serial, 10 * i + serial)
            holding = units.add(holding, [block])
            units.add_into(expected, [block])
    check_structure(holding, expected)
    assert tuple.__len__(holding) > 1  # branches
    for block in list(expected)[::2]:  # remove every other block: chunks join
        holding = units.remove(holding, [block])
        units.remove_from(expected, [block])
    check_structure(holding, expected)
    while len(expected) > 10:
        block = expected[len(expected) // 3]
        holding = units.remove(holding, [block])
        units.remove_from(expected, [block])
    check_structure(holding, expected)
    assert type(holding) is tuple  # small again: a plain tuple


@pytest.mark.parametrize("level", ["chunk", "branch"])
def test_a_block_joins_its_neighbour_across_a_boundary(small_chunks: None, level: str) -> None:
    """A block that fills the gap between the last block of a chunk (of a branch) and
    the first of the next joins both; one that overlaps the next's first is refused."""
    holding = units.add((), spaced(20))
    assert type(holding) is Blocks
    branches = tuple.__getitem__(holding, slice(None))
    assert len(branches) > 1 and len(branches[0].chunks) > 1
    if level == "chunk":
        last, following = branches[0].chunks[0][-1], branches[0].chunks[1][0]
    else:
        last, following = branches[0].chunks[-1][-1], branches[1].chunks[0][0]
    bridge = SerialBlock(last.unit_class, last.last + 1, following.first - 1)
    joined = units.add(holding, [bridge])
    assert SerialBlock(last.unit_class, last.first, following.last) in joined
    assert len(joined) == len(holding) - 1
    with pytest.raises(ValueError):
        units.add(holding, [SerialBlock(last.unit_class, last.last, following.first)])
    assert holding == spaced(20)


def test_take_from_a_large_holding_removes_without_copying_the_rest() -> None:
    blocks = spaced(3 * units.PLAIN, CLASSES[2])
    holding = units.add((), (SerialBlock(CLASSES[1], 1, 9), *blocks))
    taken, remaining = units.take(holding, UnitSelector(UnitType.CEA, 2025), 7)
    assert taken == (blocks[0], SerialBlock(CLASSES[2], 11, 12))
    assert type(remaining) is Blocks
    assert remaining == (
        SerialBlock(CLASSES[1], 1, 9),
        SerialBlock(CLASSES[2], 13, 15),
        *blocks[2:],
    )
    assert units.take(holding, UnitSelector(UnitType.CEA), 0) == ((), holding)


def test_blocks_copy_and_pickle_as_the_same_blocks() -> None:
    holding = units.add((), spaced(1_000))
    assert deepcopy(holding) is holding
    restored = pickle.loads(pickle.dumps(holding))
    assert type(restored) is Blocks and restored == holding
    assert () + holding == tuple(holding)  # noqa: RUF005 (``+`` is under test)
    assert holding + () == tuple(holding)  # noqa: RUF005
    assert Blocks(reversed(spaced(3))) == spaced(3)


# -- snapshots --------------------------------------------------------------------


def national(blocks: tuple[SerialBlock, ...]) -> Account:
    account = Account.open("CN-SURRENDER", AccountType.SURRENDER, Holder("registry"), "mee")
    account.credit(uuid4(), blocks)
    account.collect_events()
    return account


def stored_snapshot(account: Account) -> StoredEvent:
    return registry_mapper().to_stored_event(Snapshot.take(account))


def test_a_snapshot_stores_a_large_holding_as_the_list_of_its_blocks() -> None:
    """The stored shape is the one a tuple of blocks always had."""
    account = national(spaced(2_000))
    assert type(account.available) is Blocks
    stored = stored_snapshot(account)
    as_tuple = deepcopy(account)
    as_tuple.available = tuple(account.available)
    state, tuple_state = (json.loads(s.state) for s in (stored, stored_snapshot(as_tuple)))
    assert state.pop("timestamp") and tuple_state.pop("timestamp")
    assert state == tuple_state
    available = state["state"]["available"]
    assert available[0] == {"_type_": "block", "_data_": ["CEA/2025", 1, 5]}
    assert len(available) == 2_000


def old_snapshot(blocks: tuple[SerialBlock, ...], version: int) -> StoredEvent:
    """A snapshot as the code before ``Blocks`` stored it: written out by hand."""
    account = national(())
    state: dict[str, Any] = json.loads(stored_snapshot(account).state)
    state["state"]["available"] = [
        {"_type_": "block", "_data_": [b.unit_class.key, b.first, b.last]} for b in blocks
    ]
    return StoredEvent(
        account.id, version, "eventsourcing.domain:Snapshot", json.dumps(state).encode()
    )


@pytest.mark.parametrize("count", [3, 2_000])
def test_an_old_snapshot_loads_and_its_holding_updates(count: int) -> None:
    """A snapshot stored before Blocks (a list of blocks) restores as a list, which every
    reader takes; the first movement makes it a holding of the right form."""
    blocks = spaced(count)
    snapshot = registry_mapper().to_domain_event(old_snapshot(blocks, 2))
    account = snapshot.mutate(None)
    assert isinstance(account, Account)
    assert list(account.available) == list(blocks)
    assert units.take(account.available, UnitSelector(UnitType.CEA), 5)[0] == blocks[:1]
    extra = SerialBlock(CLASSES[2], 10 * count + 1, 10 * count + 3)
    account.credit(uuid4(), [extra])
    assert account.available == (*blocks, extra)
    assert type(account.available) is (Blocks if count > units.PLAIN else tuple)
    account.debit_blocks(uuid4(), [blocks[1]])
    assert account.available == (blocks[0], *blocks[2:], extra)
    replayed = None
    for event in account.collect_events():
        replayed = event.mutate(replayed if replayed is not None else snapshot.mutate(None))
    assert replayed is not None and replayed.available == account.available

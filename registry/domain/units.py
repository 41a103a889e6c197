"""Emission units: unit types, unit classes and serial blocks.

A holding is a sorted sequence of disjoint serial blocks (an account's is a ``Blocks``,
which updates without copying it all). Movements take the oldest unit
class first and, within it, the lowest serials first (FIFO), splitting a block when
needed; a receiving holding merges adjacent blocks of the same class.
"""

from __future__ import annotations

import operator
import re
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate, chain
from typing import Any, SupportsIndex, overload

from registry.domain.errors import InsufficientUnits, InvalidCommand, UnitsNotHeld


class UnitType(StrEnum):
    """CEA: a national allowance. CCER: a certified offset credit from a project."""

    CEA = "CEA"
    CCER = "CCER"


MIN_VINTAGE = 2005
MAX_VINTAGE = 2100


@dataclass(frozen=True, order=True, slots=True)
class UnitClass:
    """(unit type, vintage[, project]): units of one class are interchangeable."""

    unit_type: UnitType
    vintage: int
    project: str = ""
    _key: str = field(default="", init=False, repr=False, compare=False, hash=False)
    """``key``, made once: the serial blocks' transcoding asks for it several times a
    trade. Not compared, hashed or shown, so equality, order and hash are the three
    fields' as before."""

    def __post_init__(self) -> None:
        if not isinstance(self.unit_type, UnitType):
            object.__setattr__(self, "unit_type", parse_unit_type(self.unit_type))
        if not MIN_VINTAGE <= self.vintage <= MAX_VINTAGE:
            raise InvalidCommand(
                f"vintage {self.vintage} is outside {MIN_VINTAGE}..{MAX_VINTAGE}",
                reason="INVALID_VINTAGE",
            )
        if self.unit_type is UnitType.CCER and not self.project:
            raise InvalidCommand("a CCER unit class needs a project id", reason="MISSING_PROJECT")
        if self.unit_type is UnitType.CEA and self.project:
            raise InvalidCommand("a CEA unit class has no project", reason="UNEXPECTED_PROJECT")
        check_project(self.project)
        key = f"{self.unit_type.value}/{self.vintage}"
        object.__setattr__(self, "_key", f"{key}/{self.project}" if self.project else key)

    @property
    def key(self) -> str:
        """Stable text form, e.g. ``CEA/2025`` or ``CCER/2024/P-0001``."""
        return self._key

    @classmethod
    def from_key(cls, key: str) -> UnitClass:
        parts = key.split("/")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise InvalidCommand(f"malformed unit class {key!r}", reason="INVALID_UNIT_CLASS")
        return cls(parse_unit_type(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return self.key


MAX_PROJECT = 64
PROJECT = re.compile(rf"[^\s/]{{1,{MAX_PROJECT}}}")
"""A CCER project id: one token (``/`` separates the parts of a unit class key), at
most as long as the read models store it (rm_holdings.project: VARCHAR(64))."""


def check_project(project: str) -> str:
    """A unit class's project id ("" for allowances)."""
    if project and (len(project) > MAX_PROJECT or not _is_project(project)):
        raise InvalidCommand(
            f"project {project!r} must be 1-{MAX_PROJECT} printable "
            "characters without spaces or '/'",
            reason="INVALID_PROJECT",
        )
    return project


@lru_cache(maxsize=4096)  # unit classes are made on every load of a holding
def _is_project(project: str) -> bool:
    return bool(PROJECT.fullmatch(project)) and project.isprintable()


def parse_unit_type(value: str) -> UnitType:
    try:
        return UnitType(value)
    except ValueError:
        raise InvalidCommand(
            f"unknown unit type {value!r}; expected CEA or CCER", reason="UNKNOWN_UNIT_TYPE"
        ) from None


@dataclass(frozen=True, order=True, slots=True)
class UnitSelector:
    """Which units a movement may take: a unit type, optionally one vintage and project."""

    unit_type: UnitType
    vintage: int | None = None
    project: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.unit_type, UnitType):
            object.__setattr__(self, "unit_type", parse_unit_type(self.unit_type))
        if self.vintage is not None and not MIN_VINTAGE <= self.vintage <= MAX_VINTAGE:
            raise InvalidCommand(
                f"vintage {self.vintage} is outside {MIN_VINTAGE}..{MAX_VINTAGE}",
                reason="INVALID_VINTAGE",
            )
        if self.project and self.unit_type is UnitType.CEA:
            raise InvalidCommand("a CEA selector has no project", reason="UNEXPECTED_PROJECT")
        if self.project:
            check_project(self.project)

    def matches(self, unit_class: UnitClass) -> bool:
        return (
            unit_class.unit_type is self.unit_type
            and (self.vintage is None or unit_class.vintage == self.vintage)
            and (not self.project or unit_class.project == self.project)
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "unit_type": self.unit_type.value,
            "vintage": self.vintage,
            "project": self.project or None,
        }

    def __str__(self) -> str:
        text = self.unit_type.value
        if self.vintage is not None:
            text += f"/{self.vintage}"
        if self.project:
            text += f" project {self.project}"
        return text


@dataclass(frozen=True, order=True, slots=True)
class SerialBlock:
    """A contiguous range of serials ``first..last`` (inclusive) of one unit class."""

    unit_class: UnitClass
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first < 1 or self.last < self.first:
            raise ValueError(f"invalid serial range {self.first}..{self.last}")

    @property
    def quantity(self) -> int:
        return self.last - self.first + 1

    def contains(self, serial: int) -> bool:
        return self.first <= serial <= self.last

    def split(self, quantity: int) -> tuple[SerialBlock, SerialBlock | None]:
        """The lowest ``quantity`` serials, and what is left (None when nothing is)."""
        if not 0 < quantity <= self.quantity:
            raise ValueError(f"cannot split {quantity} from a block of {self.quantity}")
        if quantity == self.quantity:
            return self, None
        cut = self.first + quantity
        return (
            SerialBlock(self.unit_class, self.first, cut - 1),
            SerialBlock(self.unit_class, cut, self.last),
        )

    def overlaps(self, other: SerialBlock) -> bool:
        return (
            self.unit_class == other.unit_class
            and self.first <= other.last
            and other.first <= self.last
        )

    def __str__(self) -> str:
        return f"{self.unit_class.key}#{self.first}-{self.last}"


Holding = tuple[SerialBlock, ...]
"""Sorted, disjoint serial blocks, adjacent blocks of one class joined: a plain tuple
up to ``PLAIN`` blocks (copying that few is cheaper than any index), a ``Blocks`` (a
tuple to every reader) beyond; ``add`` and ``remove`` choose, and take either, or the
list a snapshot restores. A ``Blocks`` shrinks back to a tuple below ``PLAIN / 2``,
so a holding near the limit does not change form at every movement."""

PLAIN = 512
"""Most blocks a holding keeps as a plain tuple (nearly every company's account)."""
CHUNK = 64
"""Most blocks a leaf (chunk) of a ``Blocks`` holds. An update copies the chunk it
changes and the chunk list of that chunk's branch, and once per update the list of
branches: about ``CHUNK + 2 * BRANCH + 2 * len / (CHUNK * BRANCH / 4)`` pointers.
Copying a pointer to a block touches the block (its reference count), and in a
holding built over a year almost every block is out of the processor's caches. With
one level of chunks of 512, a 27-block credit into a million scattered blocks cost
~630 µs and a single block ~100 µs; with this tree ~330-360 and ~25
(``python -m bench.holdings --sizes 100000 1000000 --scattered``)."""
_FILL = CHUNK // 2
"""How full a chunk is made: room to grow before it splits."""
_LOW = CHUNK // 8
"""A chunk emptier than this after a removal joins a neighbour."""
BRANCH = 64
"""Most chunks a branch holds."""
_BRANCH_FILL = BRANCH // 2
"""How full a branch is made."""
_BRANCH_LOW = BRANCH // 8
"""A branch with fewer chunks than this after a removal is remade with a neighbour."""
_BULK = 64
"""Blocks per update beyond which one pass over a copy beats updating a ``Blocks``
block by block: more than 1 in ``_BULK`` of its blocks (an issuance of thousands)."""
Chunk = tuple[SerialBlock, ...]
_Key = tuple[UnitClass, int]


class _Branch:
    """Up to ``BRANCH`` chunks of a ``Blocks``, with the start of each (for bisection)
    and their count of blocks. Never changed once made: updates make new branches."""

    __slots__ = ("chunks", "length", "starts")

    def __init__(self, chunks: tuple[Chunk, ...], starts: tuple[_Key, ...], length: int) -> None:
        self.chunks = chunks
        self.starts = starts
        self.length = length

    def ends(self) -> list[int]:
        """Blocks up to the end of each chunk."""
        return list(accumulate(map(len, self.chunks)))


# A Blocks is, to the tuple type, the tuple of its branches: these read it so.
_branch_at: Callable[[Blocks, int], _Branch] = tuple.__getitem__  # type: ignore[assignment]
_branch_count: Callable[[Blocks], int] = tuple.__len__
_branches_of: Callable[[Blocks], Iterator[_Branch]] = tuple.__iter__  # type: ignore[assignment]


class Blocks(tuple[SerialBlock, ...]):
    """An account's holding: a persistent sorted sequence of serial blocks.

    ``add`` and ``remove`` return a new ``Blocks`` that shares all but a few chunks and
    branches with the old one, which stays unchanged (the aggregate cache hands out
    shallow copies of accounts, so a holding is never mutated): an update costs about
    the same at a thousand blocks as at a million — CN-SURRENDER ends a 10x national
    year with ~1,000,000 blocks and every surrender credits it.

    It is a B-tree of three levels: a tuple of branches, each holding up to ``BRANCH``
    chunks, each a tuple of up to ``CHUNK`` blocks. It reads as the tuple of its
    blocks: ``len``, iteration, indexing, slicing, ``==`` and ``hash`` are the blocks'
    (a ``Blocks`` equals the plain tuple of the same blocks), and the event encoder,
    which iterates a tuple subclass, stores it as the list of its blocks: the shape
    account snapshots always had."""

    _starts: tuple[_Key, ...]
    """The (class, first serial) of each branch's first block: which branch a block is in."""
    _len: int
    _ends: tuple[int, ...] | None = None
    """Blocks up to the end of each branch: made on the first indexing, not per update."""

    def __new__(cls, blocks: Iterable[SerialBlock] = ()) -> Blocks:
        """Any blocks: sorted, checked for overlaps and joined, as ``merge``."""
        return cls.from_sorted(merge(blocks))

    @classmethod
    def from_sorted(cls, blocks: Sequence[SerialBlock]) -> Blocks:
        """Blocks already sorted, disjoint and joined (a holding, a restored snapshot's
        list), chunked as they are: O(n), once per loaded account."""
        if type(blocks) is Blocks:
            return blocks
        items = tuple(blocks)  # the very tuple, when it is one
        if not items:
            return EMPTY
        if len(items) <= CHUNK:  # one chunk
            chunks: list[Chunk] = [items]
        else:
            chunks = [items[i : i + _FILL] for i in range(0, len(items), _FILL)]
        branches = _branched(chunks, [_start(c[0]) for c in chunks], _BRANCH_FILL)
        return cls._make(tuple(branches), tuple(b.starts[0] for b in branches), len(items))

    @classmethod
    def _make(cls, branches: tuple[_Branch, ...], starts: tuple[_Key, ...], length: int) -> Blocks:
        made = tuple.__new__(cls, branches)
        made._starts = starts
        made._len = length
        return made

    # -- updates: each returns a new Blocks -------------------------------------------

    def added(self, block: SerialBlock) -> Blocks:
        """``add`` of one block (ValueError when it overlaps one held)."""
        return self.updated((block,), _add_one)

    def removed(self, wanted: SerialBlock) -> Blocks:
        """``remove`` of one block (UnitsNotHeld when any of its serials is not held)."""
        return self.updated((wanted,), _remove_one)

    def updated(self, blocks: Iterable[SerialBlock], update: _Update) -> Blocks:
        """A new ``Blocks`` with ``update`` made for each block, in order: the branch a
        block falls in (and the next one, when an added block comes after its last block
        and may join or overlap the next one's first; a neighbour, when a removal leaves
        a branch too small) is opened into lists of chunks and starts, ``update`` changes
        those, and they are made into branches again. The index of branches is copied
        once for all the blocks (a surrender credits dozens)."""
        branches = list(_branches_of(self))
        starts = list(self._starts)
        length = self._len
        adding = update is _add_one
        for block in blocks:
            key = _start(block)
            lo = max(bisect_right(starts, key) - 1, 0)
            hi = min(lo + 1, len(branches))
            if adding and hi < len(branches) and key > _start(branches[lo].chunks[-1][-1]):
                hi += 1  # the block is after this branch's last: the next's first is its neighbour
            if hi == lo + 1:  # usually: one branch opened
                branch = branches[lo]
                chunks, chunk_starts, held = list(branch.chunks), list(branch.starts), branch.length
            else:
                chunks = [c for b in branches[lo:hi] for c in b.chunks]
                chunk_starts = [k for b in branches[lo:hi] for k in b.starts]
                held = sum(b.length for b in branches[lo:hi])
            change = update(chunks, chunk_starts, block)
            length += change
            held += change
            if not adding and len(chunks) < _BRANCH_LOW and len(branches) > 1:
                if hi < len(branches):  # too few chunks left: remade with a neighbour
                    chunks += branches[hi].chunks
                    chunk_starts += branches[hi].starts
                    held += branches[hi].length
                    hi += 1
                else:
                    lo -= 1
                    chunks[:0] = branches[lo].chunks
                    chunk_starts[:0] = branches[lo].starts
                    held += branches[lo].length
            if len(chunks) > BRANCH:
                made = _branched(chunks, chunk_starts, _BRANCH_FILL)
            else:
                made = [_Branch(tuple(chunks), tuple(chunk_starts), held)] if chunks else []
            branches[lo:hi] = made
            starts[lo:hi] = [b.starts[0] for b in made]
        return Blocks._make(tuple(branches), tuple(starts), length)

    def _chunks(self) -> Iterator[Chunk]:
        return chain.from_iterable(b.chunks for b in _branches_of(self))

    # -- the tuple of the blocks -----------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[SerialBlock]:
        return chain.from_iterable(self._chunks())

    def __reversed__(self) -> Iterator[SerialBlock]:
        branches = reversed(list(_branches_of(self)))
        return (b for br in branches for c in reversed(br.chunks) for b in reversed(c))

    def _locate(self, index: int) -> SerialBlock:
        ends = self._ends
        if ends is None:
            ends = self._ends = tuple(accumulate(b.length for b in _branches_of(self)))
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("holding index out of range")
        at = bisect_right(ends, index)
        branch = _branch_at(self, at)
        index -= ends[at - 1] if at else 0
        chunk_ends = branch.ends()
        chunk = bisect_right(chunk_ends, index)
        return branch.chunks[chunk][index - (chunk_ends[chunk - 1] if chunk else 0)]

    @overload
    def __getitem__(self, index: SupportsIndex) -> SerialBlock: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[SerialBlock, ...]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> SerialBlock | tuple[SerialBlock, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        return self._locate(operator.index(index))

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, SerialBlock) or not self._len:
            return False
        key = _start(item)
        at = bisect_right(self._starts, key) - 1
        if at < 0:
            return False
        branch = _branch_at(self, at)
        chunk = bisect_right(branch.starts, key) - 1
        return chunk >= 0 and item in branch.chunks[chunk]

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if not isinstance(other, tuple):
            return NotImplemented
        if len(other) != self._len:
            return False
        return tuple(self) == tuple(other)  # C comparison, shared blocks by identity

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __lt__(self, other: tuple[SerialBlock, ...]) -> bool:
        return tuple(self) < tuple(other)

    def __le__(self, other: tuple[SerialBlock, ...]) -> bool:
        return tuple(self) <= tuple(other)

    def __gt__(self, other: tuple[SerialBlock, ...]) -> bool:
        return tuple(self) > tuple(other)

    def __ge__(self, other: tuple[SerialBlock, ...]) -> bool:
        return tuple(self) >= tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __add__(self, other: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self) + tuple(other)

    def __radd__(self, other: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(other) + tuple(self)

    def __mul__(self, times: SupportsIndex) -> tuple[SerialBlock, ...]:
        return tuple(self) * times

    __rmul__ = __mul__

    def count(self, item: Any) -> int:
        return int(item in self)  # disjoint blocks: each is held at most once

    def index(self, item: Any, start: SupportsIndex = 0, stop: SupportsIndex = sys.maxsize) -> int:
        return tuple(self).index(item, start, stop)

    def __repr__(self) -> str:
        return f"Blocks({tuple(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Blocks.from_sorted, (tuple(self),))

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (tuple(self),)

    def __copy__(self) -> Blocks:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, object]) -> Blocks:
        return self


EMPTY = Blocks._make((), (), 0)


def _branched(chunks: list[Chunk], starts: list[_Key], fill: int) -> list[_Branch]:
    """Chunks (and their starts) as branches of ``fill`` chunks or fewer, split evenly;
    none when there are no chunks."""
    if not chunks:
        return []
    step = -(-len(chunks) // -(-len(chunks) // fill))
    return [
        _Branch(tuple(part), tuple(starts[i : i + step]), sum(map(len, part)))
        for i in range(0, len(chunks), step)
        for part in (chunks[i : i + step],)
    ]


_Starts = list[_Key]
_Update = Callable[[list[Chunk], _Starts, SerialBlock], int]
"""Changes a ``Blocks``'s chunks and starts, as lists, for one block: how many
blocks more (or fewer) it holds."""


def _add_one(chunks: list[Chunk], starts: _Starts, block: SerialBlock) -> int:
    """One block added (ValueError when it overlaps one held): one chunk (two, when the
    block joins the first of the next) is copied."""
    if not chunks:
        chunks.append((block,))
        starts.append(_start(block))
        return 1
    key = _start(block)
    lo = max(bisect_right(starts, key) - 1, 0)
    chunk = chunks[lo]
    index = bisect_right(chunk, key, key=_start)
    before = chunk[index - 1] if index else None
    following: Chunk = ()  # the next chunk, when the block is after this one's last
    if index < len(chunk):
        after: SerialBlock | None = chunk[index]
    elif lo + 1 < len(chunks):
        following = chunks[lo + 1]
        after = following[0]
    else:
        after = None
    # The serials are compared before the classes (``_same``): the neighbours are
    # sorted by (class, first), so when the serials cannot touch the classes need not
    # be looked at, and the dataclass ``==`` is a Python call.
    unit_class, first, last, start, stop = block.unit_class, block.first, block.last, index, index
    if before is not None and before.last + 1 >= first and _same(before.unit_class, unit_class):
        if before.last >= first:
            raise ValueError(f"overlapping serial blocks {before} and {block}")
        first, start = before.first, index - 1
    joins = False
    if after is not None and after.first <= last + 1 and _same(after.unit_class, unit_class):
        if after.first <= last:
            raise ValueError(f"overlapping serial blocks {block} and {after}")
        last, stop, joins = after.last, index + 1, True
    if (first, last) != (block.first, block.last):
        block = SerialBlock(unit_class, first, last)
    if joins and following:  # the block took the next chunk's first
        _replace(chunks, starts, lo, lo + 2, chunk[:start] + (block,), following[1:])  # noqa: RUF005
    else:  # concatenation: a fifth faster than unpacking into a new tuple (timeit)
        _replace(chunks, starts, lo, lo + 1, chunk[:start] + (block,) + chunk[stop:])  # noqa: RUF005
    return 1 - (stop - start)


def _same(one: UnitClass, other: UnitClass) -> bool:
    """Whether two unit classes are equal: usually the very same object (decoded
    through one cache), which ``==`` on a dataclass does not check first."""
    return one is other or one == other


def _remove_one(chunks: list[Chunk], starts: _Starts, wanted: SerialBlock) -> int:
    """One block removed (UnitsNotHeld when any of its serials is not held): one chunk
    is copied (with a neighbour, when it shrinks too much)."""
    key = _start(wanted)
    lo = bisect_right(starts, key) - 1
    chunk = chunks[lo] if lo >= 0 else ()
    index = bisect_right(chunk, key, key=_start) - 1
    block = chunk[index] if index >= 0 else None
    if block is None or block.unit_class != wanted.unit_class or wanted.last > block.last:
        raise UnitsNotHeld(f"serial block {wanted} is not held here", block=str(wanted))
    pieces: Chunk = ()
    if block.first < wanted.first:
        pieces = (SerialBlock(block.unit_class, block.first, wanted.first - 1),)
    if wanted.last < block.last:
        pieces += (SerialBlock(block.unit_class, wanted.last + 1, block.last),)
    items = chunk[:index] + pieces + chunk[index + 1 :]
    hi = lo + 1
    if len(items) < _LOW and len(chunks) > 1:  # join a neighbour, not to leave crumbs
        if hi < len(chunks):
            items += chunks[hi]
            hi += 1
        else:
            lo -= 1
            items = chunks[lo] + items
    _replace(chunks, starts, lo, hi, items)
    return len(pieces) - 1


def _replace(chunks: list[Chunk], starts: _Starts, lo: int, hi: int, *parts: Chunk) -> None:
    """Chunks ``lo:hi`` replaced by ``parts`` (the empty left out, the too full split)."""
    new = [piece for part in parts for piece in _pieces(part)]
    chunks[lo:hi] = new
    starts[lo:hi] = [_start(c[0]) for c in new]


def _pieces(items: Chunk) -> tuple[Chunk, ...]:
    """``items`` as chunks: none when empty, split evenly when more than ``CHUNK``."""
    if len(items) <= CHUNK:
        return (items,) if items else ()
    step = -(-len(items) // (len(items) // _FILL))
    return tuple(items[i : i + step] for i in range(0, len(items), step))


def total(blocks: Iterable[SerialBlock], selector: UnitSelector | None = None) -> int:
    return sum(b.quantity for b in blocks if selector is None or selector.matches(b.unit_class))


def merge(blocks: Iterable[SerialBlock]) -> Holding:
    """Sort blocks and join the adjacent ones of the same class."""
    merged: list[SerialBlock] = []
    for block in sorted(blocks):
        if merged:
            last = merged[-1]
            if last.unit_class == block.unit_class and last.last + 1 == block.first:
                merged[-1] = SerialBlock(block.unit_class, last.first, block.last)
                continue
            if last.overlaps(block):
                raise ValueError(f"overlapping serial blocks {last} and {block}")
        merged.append(block)
    return tuple(merged)


def take(
    holding: Sequence[SerialBlock], selector: UnitSelector, quantity: int
) -> tuple[Holding, Holding]:
    """Take ``quantity`` units matching ``selector``: oldest class, lowest serials first.

    Returns (taken, remaining). Raises InsufficientUnits without changing anything.
    """
    if quantity == 0:
        return (), holding if isinstance(holding, tuple) else tuple(holding)
    persistent = type(holding) is Blocks  # the rest is removed from it, not copied
    taken: list[SerialBlock] = []
    remaining: list[SerialBlock] = []
    still = quantity
    for index, block in enumerate(holding):  # holding is sorted, so this is FIFO
        if not selector.matches(block.unit_class):
            if not persistent:
                remaining.append(block)
            continue
        head, rest = block.split(min(still, block.quantity))
        taken.append(head)
        still -= head.quantity
        if rest is not None and not persistent:
            remaining.append(rest)
        if still == 0:
            if persistent:
                return tuple(taken), remove(holding, taken)
            remaining.extend(holding[index + 1 :])
            return tuple(taken), tuple(remaining)
    available = quantity - still
    raise InsufficientUnits(
        f"{quantity} {selector} requested, {available} available",
        requested=quantity,
        available=available,
        units=str(selector),
    )


_start: Callable[[SerialBlock], tuple[UnitClass, int]] = operator.attrgetter("unit_class", "first")
"""A block's (class, first serial), its sort key: made in C (bisecting a chunk asks
for it ~10 times a block; a Python function was a fifth of crediting one)."""


def remove(holding: Sequence[SerialBlock], blocks: Iterable[SerialBlock]) -> Holding:
    """Remove exactly these serial blocks; every serial of them must be in the holding.

    The holding is sorted, so each block is found by bisection; a large holding is a
    ``Blocks``, and the result shares all but the touched chunks with it."""
    if type(holding) is Blocks:
        blocks = blocks if isinstance(blocks, list | tuple) else tuple(blocks)
        if not _in_bulk(holding, blocks):
            kept = holding.updated(blocks, _remove_one)
            return tuple(kept) if len(kept) < PLAIN // 2 else kept  # small again
    result = _listed(holding)
    remove_from(result, blocks)
    return tuple(result) if len(result) <= PLAIN else Blocks.from_sorted(result)


def _in_bulk(holding: Blocks, blocks: Sequence[SerialBlock]) -> bool:
    """Whether one pass over a copy of the holding is cheaper than updating it block by
    block (an issuance of thousands of blocks)."""
    return len(blocks) * _BULK > len(holding)


def _listed(holding: Sequence[SerialBlock]) -> list[SerialBlock]:
    """The blocks as a new list (a one-chunk ``Blocks`` copied as its chunk)."""
    if type(holding) is Blocks and _branch_count(holding) == 1:
        chunks = _branch_at(holding, 0).chunks
        if len(chunks) == 1:
            return list(chunks[0])
    return list(holding)


def remove_from(result: list[SerialBlock], blocks: Iterable[SerialBlock]) -> None:
    """``remove`` on a list, in place (a chunk of a ``Blocks``, a bulk update)."""
    for wanted in blocks:
        index = bisect_right(result, _start(wanted), key=_start) - 1
        block = result[index] if index >= 0 else None
        if block is None or block.unit_class != wanted.unit_class or wanted.last > block.last:
            raise UnitsNotHeld(f"serial block {wanted} is not held here", block=str(wanted))
        pieces = []
        if block.first < wanted.first:
            pieces.append(SerialBlock(block.unit_class, block.first, wanted.first - 1))
        if wanted.last < block.last:
            pieces.append(SerialBlock(block.unit_class, wanted.last + 1, block.last))
        result[index : index + 1] = pieces


def add(holding: Sequence[SerialBlock], blocks: Iterable[SerialBlock]) -> Holding:
    """The holding with ``blocks`` added, sorted, adjacent blocks of a class joined.

    Raises ValueError when a block overlaps one already held (a serial in two places).
    Each block is placed by bisection instead of re-sorting the whole holding; a large
    holding is a ``Blocks``, and the result shares all but the touched chunks with it."""
    if type(holding) is Blocks:
        blocks = blocks if isinstance(blocks, list | tuple) else tuple(blocks)
        if not _in_bulk(holding, blocks):
            return holding.updated(blocks, _add_one)
    result = _listed(holding)
    add_into(result, blocks)
    return tuple(result) if len(result) <= PLAIN else Blocks.from_sorted(result)


def add_into(result: list[SerialBlock], blocks: Iterable[SerialBlock]) -> None:
    """``add`` on a list, in place (see ``remove_from``)."""
    for block in blocks:
        index = bisect_right(result, _start(block), key=_start)
        before = result[index - 1] if index > 0 else None
        after = result[index] if index < len(result) else None
        if before is not None and before.overlaps(block):
            raise ValueError(f"overlapping serial blocks {before} and {block}")
        if after is not None and after.overlaps(block):
            raise ValueError(f"overlapping serial blocks {block} and {after}")
        first, last, start, stop = block.first, block.last, index, index
        if (
            before is not None
            and before.unit_class == block.unit_class
            and before.last + 1 == first
        ):
            first, start = before.first, index - 1
        if after is not None and after.unit_class == block.unit_class and last + 1 == after.first:
            last, stop = after.last, index + 1
        if (first, last) != (block.first, block.last):
            block = SerialBlock(block.unit_class, first, last)
        result[start:stop] = [block]

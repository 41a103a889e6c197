"""Emission units: unit types, unit classes and serial blocks.

A holding is a sorted list of disjoint serial blocks. Movements take the oldest unit
class first and, within it, the lowest serials first (FIFO), splitting a block when
needed; a receiving holding merges adjacent blocks of the same class.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

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

    @property
    def key(self) -> str:
        """Stable text form, e.g. ``CEA/2025`` or ``CCER/2024/P-0001``."""
        parts = [self.unit_type.value, str(self.vintage)]
        if self.project:
            parts.append(self.project)
        return "/".join(parts)

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
        return (), tuple(holding)
    taken: list[SerialBlock] = []
    remaining: list[SerialBlock] = []
    still = quantity
    for index, block in enumerate(holding):  # holding is sorted, so this is FIFO
        if not selector.matches(block.unit_class):
            remaining.append(block)
            continue
        head, rest = block.split(min(still, block.quantity))
        taken.append(head)
        still -= head.quantity
        if rest is not None:
            remaining.append(rest)
        if still == 0:
            remaining.extend(holding[index + 1 :])
            return tuple(taken), tuple(remaining)
    available = quantity - still
    raise InsufficientUnits(
        f"{quantity} {selector} requested, {available} available",
        requested=quantity,
        available=available,
        units=str(selector),
    )


def _start(block: SerialBlock) -> tuple[UnitClass, int]:
    return block.unit_class, block.first


def remove(holding: Sequence[SerialBlock], blocks: Iterable[SerialBlock]) -> Holding:
    """Remove exactly these serial blocks; every serial of them must be in the holding.

    The holding is sorted, so each block is found by bisection: national accounts hold
    thousands of blocks, and a linear scan per block dominated their movements."""
    result = list(holding)
    remove_from(result, blocks)
    return tuple(result)


def remove_from(result: list[SerialBlock], blocks: Iterable[SerialBlock]) -> None:
    """``remove`` on a list, in place: several movements applied to one holding copy it
    once (CN-SURRENDER holds ~100,000 blocks, and copying it twice per movement was half
    of a surrender's time)."""
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
    Each block is placed by bisection instead of re-sorting the whole holding."""
    result = list(holding)
    add_into(result, blocks)
    return tuple(result)


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

"""Restrictions on moving units: judicial block freezes, origin detentions, the market halt.

Three aggregates, each with its own id and module, so that every refusal names the
restriction that caused it (its id and reference travel in the error's metadata):
``registry.domain.block_freezes.BlockFreeze`` (a court order freezes serial blocks of
one account), ``registry.domain.origin_detentions.OriginDetention`` (every unit of one
CCER project, wherever it is; deleting units found fraudulent is done by clearing and
cancelling them in one atomic save, so no window opens in which they could move) and
``registry.domain.market_halt.MarketHalt`` (exchange settlement, ``HALTED_KINDS``,
stops; everything else goes on). This module holds what they share (validation, the
record of each change); ``registry.domain.restriction_guards`` the guards.

Four eyes is not repeated here: the application carries out an approved
``registry.domain.proposals.Proposal`` and passes its reference as ``proposal``, so each
change records who proposed and approved it (through the proposal), who carried it out,
when (``at``, passed in: the domain never reads a clock) and why.

The guards (``check_unrestricted`` and the three it combines) are pure functions the
application calls before moving units; ``movable`` is what FIFO selection should take
from, so that a frozen or detained block does not refuse a movement that other units of
the account could have served.

State is primitive (blocks as ``[unit class key, first, last]``, datetimes through the
store's ISO transcoding), so snapshots round-trip through the JSON transcoder; events
replace attributes rather than mutate them, so cached copies stay independent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

from registry.domain.errors import InvalidCommand
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitClass

MAX_REFERENCE = 200
"""Court case numbers, decision numbers and evidence references are short identifiers."""
HALTED_KINDS: frozenset[TransactionKind] = frozenset({TransactionKind.SETTLEMENT})
"""What a market halt stops: exchange settlement only. Compliance (surrender), allocation
and administrative movements must go on during a trading emergency."""

BlockRow: TypeAlias = list[Any]
"""A serial block as primitive state: ``[unit class key, first, last]``."""


# -- validation -------------------------------------------------------------------------


def check_reference(value: str, field: str = "reference") -> str:
    """A court-order, decision or freeze reference: required, a short printable text."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(f"{field} is required", reason="MISSING_REFERENCE", field=field)
    if len(value) > MAX_REFERENCE or not value.isprintable():
        raise InvalidCommand(
            f"{field} must be at most {MAX_REFERENCE} printable characters",
            reason="INVALID_REFERENCE",
            field=field,
        )
    return value


def check_evidence(value: str) -> str:
    """Releasing a court freeze or clearing a detention must point at its evidence."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(
            "an evidence reference is required", reason="MISSING_EVIDENCE", field="evidence"
        )
    return check_reference(value, "evidence")


def check_blocks(blocks: Iterable[SerialBlock]) -> Holding:
    """The blocks of a freeze: at least one, none overlapping another; returned sorted,
    adjacent ones joined (so equal content compares equal however it was cut)."""
    joined: list[SerialBlock] = []
    for block in sorted(blocks):
        if joined:
            last = joined[-1]
            if last.unit_class == block.unit_class and block.first <= last.last:
                raise InvalidCommand(
                    f"serial blocks {last} and {block} overlap",
                    reason="OVERLAPPING_BLOCKS",
                    field="blocks",
                    block=str(block),
                    other=str(last),
                )
            if last.unit_class == block.unit_class and block.first == last.last + 1:
                joined[-1] = SerialBlock(block.unit_class, last.first, block.last)
                continue
        joined.append(block)
    if not joined:
        raise InvalidCommand(
            "a block freeze needs at least one serial block", reason="NO_BLOCKS", field="blocks"
        )
    return tuple(joined)


def blocks_from_rows(rows: Iterable[Sequence[object]]) -> list[SerialBlock]:
    """Blocks from ``[unit class key, first, last]`` rows (a proposal's JSON payload)."""
    blocks: list[SerialBlock] = []
    for index, row in enumerate(rows):
        field = f"blocks[{index}]"
        if isinstance(row, str | bytes) or not isinstance(row, Sequence) or len(row) != 3:
            raise InvalidCommand(
                f"{field} must be [unit class, first, last]", reason="INVALID_BLOCK", field=field
            )
        key, first, last = row
        if (
            not isinstance(key, str)
            or not _serial(first)
            or not _serial(last)
            or not isinstance(first, int)
            or not isinstance(last, int)
            or last < first
        ):
            raise InvalidCommand(
                f"{field} {list(row)!r} is not a serial range of a unit class",
                reason="INVALID_BLOCK",
                field=field,
            )
        blocks.append(SerialBlock(UnitClass.from_key(key), first, last))
    return blocks


def _serial(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def aware(at: datetime) -> datetime:
    """A naive time is the caller's defect, not a client error: fail loudly."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"time must be a timezone-aware datetime, got {at!r}")
    return at


def principal_name(principal: Principal | str) -> str:
    who = str(principal)
    if not who:
        raise ValueError("every change names the principal who made it")
    return who


@lru_cache(maxsize=4096)
def _unit_class(key: str) -> UnitClass:
    """Parsed once per class: guards rebuild frozen blocks on every movement checked."""
    return UnitClass.from_key(key)


def block_row(block: SerialBlock) -> BlockRow:
    return [block.unit_class.key, block.first, block.last]


def row_block(row: Sequence[Any]) -> SerialBlock:
    key, first, last = row
    return SerialBlock(_unit_class(key), int(first), int(last))


def start(block: SerialBlock) -> tuple[UnitClass, int]:
    return block.unit_class, block.first


# -- the record of each change ---------------------------------------------------------------


@dataclass(frozen=True)
class RestrictionChange:
    """One change of a restriction as a regulator reads it: what, when, who, why, on
    what authority (``reference``: court order or decision; ``evidence`` for a release
    or clearance; ``proposal``: the approved four-eyes proposal, when there was one)."""

    change: str
    at: datetime
    principal: str
    reason: str
    reference: str = ""
    evidence: str = ""
    proposal: str = ""

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> RestrictionChange:
        return cls(**entry)


def change_entry(
    change: str,
    at: datetime,
    principal: str,
    reason: str,
    *,
    reference: str = "",
    evidence: str = "",
    proposal: str = "",
) -> dict[str, Any]:
    return {
        "change": change,
        "at": at,
        "principal": principal,
        "reason": reason,
        "reference": reference,
        "evidence": evidence,
        "proposal": proposal,
    }


class RestrictionHistory:
    """What the three restrictions share: a history of changes in primitive state. A
    plain mixin: the aggregates set ``history`` in their own ``__init__``."""

    if TYPE_CHECKING:
        history: list[dict[str, Any]]

    @property
    def changes(self) -> tuple[RestrictionChange, ...]:
        """Every change, oldest first (the events say the same; this survives snapshots)."""
        return tuple(RestrictionChange.of(entry) for entry in self.history)

    def _log(self, entry: dict[str, Any]) -> None:
        self.history = [*self.history, entry]  # replaced, never mutated

"""Restrictions on moving units: judicial block freezes, origin detentions, the market halt.

Three aggregates, each with its own id and module, so that every refusal names the
restriction that caused it (its id and reference travel in the error's metadata):
``registry.domain.block_freezes.BlockFreeze`` (a court order freezes serial blocks of
one account), ``registry.domain.origin_detentions.OriginDetention`` (every unit of one
CCER project, wherever it is; deleting units found fraudulent is done by clearing and
cancelling them in one atomic save, so no window opens in which they could move) and
``registry.domain.market_halt.MarketHalt`` (exchange settlement, ``HALTED_KINDS``,
stops; everything else goes on). This module holds what they share (validation, the
record of each change) and the guards.

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

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

from registry.domain.errors import InvalidCommand, MarketHalted, OriginDetained, SerialsFrozen
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitClass

if TYPE_CHECKING:  # the aggregates build on this module; the guards only read them
    from registry.domain.block_freezes import BlockFreeze
    from registry.domain.market_halt import MarketHalt
    from registry.domain.origin_detentions import OriginDetention

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


def _start(block: SerialBlock) -> tuple[UnitClass, int]:
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


# -- guards ------------------------------------------------------------------------------------


DetentionLookup: TypeAlias = (
    "Mapping[str, OriginDetention] | Callable[[str], OriginDetention | None]"
)
"""Detentions by project id: a mapping (e.g. the active ones) or a lookup function."""


class FrozenSerials:
    """The actively frozen serials of one account, sorted for bisection.

    Freezes may overlap each other (two courts, the same serials), so each entry also
    keeps the furthest ``last`` reached so far in its unit class: a lookup walks back
    from the bisection point only while an overlap is still possible. A movement of M
    blocks against F frozen blocks costs O(M log F), nothing when F is zero."""

    def __init__(self, account_id: str | None, freezes: Iterable[BlockFreeze]) -> None:
        entries = sorted(
            (
                (block, freeze)
                for freeze in freezes
                if account_id is not None and freeze.account_id == account_id and freeze.is_active
                for block in freeze.frozen_blocks
            ),
            key=lambda entry: _start(entry[0]),
        )
        self._entries = entries
        self._starts = [_start(block) for block, _ in entries]
        self._classes = {block.unit_class for block, _ in entries}
        self._reach: list[int] = []
        for index, (block, _) in enumerate(entries):
            before = entries[index - 1][0] if index else None
            same = before is not None and before.unit_class == block.unit_class
            self._reach.append(max(self._reach[-1], block.last) if same else block.last)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def overlap(self, block: SerialBlock) -> tuple[SerialBlock, BlockFreeze] | None:
        """A frozen block (and its freeze) that shares serials with ``block``, if any."""
        if block.unit_class not in self._classes:
            return None
        index = bisect_right(self._starts, (block.unit_class, block.last)) - 1
        while index >= 0:
            frozen, freeze = self._entries[index]
            if frozen.unit_class != block.unit_class or self._reach[index] < block.first:
                return None
            if frozen.last >= block.first:
                return frozen, freeze
            index -= 1
        return None

    def first_overlap(
        self, blocks: Iterable[SerialBlock]
    ) -> tuple[SerialBlock, SerialBlock, BlockFreeze] | None:
        """The first of ``blocks`` that touches frozen serials, with what it touches."""
        if not self._entries:
            return None
        for block in blocks:
            found = self.overlap(block)
            if found is not None:
                return block, *found
        return None

    @property
    def blocks(self) -> Holding:
        return tuple(block for block, _ in self._entries)


def check_halt(kind: TransactionKind | str, halt: MarketHalt | None) -> None:
    """Refuse exchange settlement while the market is halted; nothing else."""
    if halt is None or not halt.is_halted or TransactionKind(kind) not in HALTED_KINDS:
        return
    raise MarketHalted(
        f"the market is halted since {halt.halted_at} by {halt.halted_by}: {halt.reason}",
        kind=TransactionKind(kind).value,
        halted_at=halt.halted_at,
        halted_by=halt.halted_by,
        halt_reason=halt.reason,
    )


def check_detentions(blocks: Sequence[SerialBlock], detentions: DetentionLookup | None) -> None:
    """Refuse moving (or issuing) any unit of a detained CCER project, whatever the kind
    and wherever it is. CEA units have no project and are never detained."""
    if detentions is None or (isinstance(detentions, Mapping) and not detentions):
        return
    find = _finder(detentions)
    projects = sorted({b.unit_class.project for b in blocks if b.unit_class.project})
    for project in projects:
        detention = find(project)
        if detention is None or not detention.is_active:
            continue
        affected = [b for b in blocks if b.unit_class.project == project]
        raise OriginDetained(
            f"units of project {project} are detained under {detention.reference} "
            f"(since {detention.detained_at}): {affected[0]} cannot move",
            project=project,
            detention=detention.reference,
            block=str(affected[0]),
            quantity=sum(b.quantity for b in affected),
        )


def check_block_freezes(
    blocks: Sequence[SerialBlock],
    *,
    source_account: str | None,
    block_freezes: Iterable[BlockFreeze] | FrozenSerials,
) -> None:
    """Refuse taking frozen serials out of ``source_account`` (an issuance has none).
    Pass a prebuilt ``FrozenSerials`` to check many movements of one account."""
    index = (
        block_freezes
        if isinstance(block_freezes, FrozenSerials)
        else FrozenSerials(source_account, block_freezes)
    )
    found = index.first_overlap(blocks)
    if found is None:
        return
    block, frozen, freeze = found
    shared = SerialBlock(
        block.unit_class, max(block.first, frozen.first), min(block.last, frozen.last)
    )
    raise SerialsFrozen(
        f"serials {shared} of account {freeze.account_id} are frozen by {freeze.freeze_id} "
        f"(court order {freeze.order_reference})",
        freeze=freeze.freeze_id,
        order_reference=freeze.order_reference,
        account=freeze.account_id,
        block=str(block),
        frozen_block=str(frozen),
        serials=str(shared),
    )


def check_unrestricted(
    blocks: Sequence[SerialBlock],
    *,
    source_account: str | None,
    kind: TransactionKind | str,
    block_freezes: Iterable[BlockFreeze] | FrozenSerials = (),
    detentions: DetentionLookup | None = None,
    halt: MarketHalt | None = None,
) -> None:
    """Raise the refusal a restriction puts on moving ``blocks`` out of ``source_account``
    by a transaction of ``kind``; return if none applies.

    Checked broadest first, so the error names the restriction a client must wait out:
    the market halt, then origin detentions, then judicial freezes of the account."""
    check_halt(kind, halt)
    check_detentions(blocks, detentions)
    check_block_freezes(blocks, source_account=source_account, block_freezes=block_freezes)


def movable(
    holding: Sequence[SerialBlock],
    *,
    account_id: str,
    block_freezes: Iterable[BlockFreeze] | FrozenSerials = (),
    detentions: DetentionLookup | None = None,
) -> Holding:
    """``holding`` without its frozen serials and detained-origin blocks: what FIFO
    selection may take from, so that restricted units are skipped rather than taken and
    refused. ``holding`` is sorted and disjoint (an account's); few blocks are frozen, so
    each frozen block is cut out by bisection instead of scanning the holding."""
    index = (
        block_freezes
        if isinstance(block_freezes, FrozenSerials)
        else FrozenSerials(account_id, block_freezes)
    )
    result = list(holding)
    for frozen in index.blocks:
        _cut(result, frozen)
    if detentions:  # None or an empty mapping: nothing is detained
        find = _finder(detentions)
        detained = {
            p
            for p in {b.unit_class.project for b in result if b.unit_class.project}
            if (d := find(p)) is not None and d.is_active
        }
        if detained:
            result = [b for b in result if b.unit_class.project not in detained]
    return tuple(result)


def _cut(result: list[SerialBlock], cut: SerialBlock) -> None:
    """Remove whatever part of ``cut`` the sorted, disjoint ``result`` holds, in place."""
    index = max(bisect_right(result, _start(cut), key=_start) - 1, 0)
    end = (cut.unit_class, cut.last)
    while index < len(result):
        block = result[index]
        if _start(block) > end:
            break
        if not block.overlaps(cut):
            index += 1
            continue
        pieces = []
        if block.first < cut.first:
            pieces.append(SerialBlock(block.unit_class, block.first, cut.first - 1))
        if cut.last < block.last:
            pieces.append(SerialBlock(block.unit_class, cut.last + 1, block.last))
        result[index : index + 1] = pieces
        index += len(pieces)


def _finder(detentions: DetentionLookup) -> Callable[[str], OriginDetention | None]:
    if isinstance(detentions, Mapping):
        return detentions.get
    return detentions

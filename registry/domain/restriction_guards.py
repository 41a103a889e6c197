"""The guards on moving units, pure functions the application calls before a movement:
``check_unrestricted`` (judicial block freezes, origin detentions and the market halt, each
checked by one of the functions it combines) and ``movable``, what FIFO selection should
take from, so that a frozen or detained block does not refuse a movement that other units
of the account could have served. The restrictions themselves are the aggregates of
``block_freezes``, ``origin_detentions`` and ``market_halt``."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeAlias

from registry.domain.block_freezes import BlockFreeze
from registry.domain.errors import MarketHalted, OriginDetained, SerialsFrozen
from registry.domain.market_halt import MarketHalt
from registry.domain.origin_detentions import OriginDetention
from registry.domain.restrictions import (
    HALTED_KINDS,
    start,
)
from registry.domain.transactions import TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitClass

DetentionLookup: TypeAlias = (
    "Mapping[str, OriginDetention] | "
    "Callable[[str], OriginDetention | Sequence[OriginDetention] | None]"
)
"""The detentions that may cover units of a project, by project id: a mapping (e.g. the
active ones) or a lookup function (answering one detention, several, or none)."""


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
            key=lambda entry: start(entry[0]),
        )
        self._entries = entries
        self._starts = [start(block) for block, _ in entries]
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
    """Refuse moving (or issuing) any detained unit, whatever the kind and wherever it
    is: a unit of an origin under an active detention, unless cleared on its holder's
    rebuttal. CEA units have no project and are never detained."""
    if detentions is None or (isinstance(detentions, Mapping) and not detentions):
        return
    find = _finder(detentions)
    for block in sorted(blocks):
        project = block.unit_class.project
        if not project:
            continue
        for detention in find(project):
            parts = detention.detained_parts(block)
            if not parts:
                continue
            affected = [b for b in blocks if b.unit_class.project == project]
            raise OriginDetained(
                f"units of project {project} are detained under {detention.reference} "
                f"(since {detention.detained_at}): {parts[0]} cannot move",
                project=project,
                origin=detention.origin.key,
                detention=detention.reference,
                block=str(parts[0]),
                quantity=sum(b.quantity for b in affected),
            )


def check_issuable(unit_class: UnitClass, quantity: int, detention: OriginDetention | None) -> None:
    """Refuse issuing units of a detained origin: a detention covers every unit of its
    origin, those not issued yet included (issuing them would put fresh, unvetted units
    of a flagged origin beside the detained ones). Checked before any serial is drawn."""
    if detention is None or not detention.is_active:
        return
    raise OriginDetained(
        f"units of project {unit_class.project} are detained under {detention.reference} "
        f"(since {detention.detained_at}): no more of {unit_class} may be issued",
        project=unit_class.project,
        origin=detention.origin.key,
        detention=detention.reference,
        unit_class=unit_class.key,
        quantity=quantity,
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
        for part in detained_blocks(result, detentions):
            _cut(result, part)
    return tuple(result)


def restricted_quantities(
    holding: Sequence[SerialBlock],
    *,
    account_id: str,
    block_freezes: Iterable[BlockFreeze] | FrozenSerials = (),
    detentions: DetentionLookup | None = None,
) -> dict[UnitClass, tuple[int, int]]:
    """Per unit class of ``holding`` (an account's blocks, held ones included): how many
    units are detained (their origin is) and how many frozen (a block freeze covers
    them), for a holder to see what it cannot move. A unit both detained and frozen
    counts in both; serials frozen by two orders count once.

    >>> from registry.domain.units import UnitType
    >>> p1 = UnitClass(UnitType.CCER, 2024, "P-1")
    >>> restricted_quantities([SerialBlock(p1, 1, 50)], account_id="A")
    {}
    """
    index = (
        block_freezes
        if isinstance(block_freezes, FrozenSerials)
        else FrozenSerials(account_id, block_freezes)
    )
    detained: dict[UnitClass, int] = {}
    if detentions:
        for part in detained_blocks(holding, detentions):
            detained[part.unit_class] = detained.get(part.unit_class, 0) + part.quantity
    frozen: dict[UnitClass, int] = {}
    reach: dict[UnitClass, int] = {}  # the last frozen serial counted, per class
    for cut in index.blocks:  # sorted by (class, first): overlapping orders count once
        first = max(cut.first, reach.get(cut.unit_class, 0) + 1)
        if first > cut.last:
            continue
        reach[cut.unit_class] = cut.last
        for block in holding:
            if block.unit_class == cut.unit_class:
                shared = min(block.last, cut.last) - max(block.first, first) + 1
                if shared > 0:
                    frozen[cut.unit_class] = frozen.get(cut.unit_class, 0) + shared
    return {
        cls: (detained.get(cls, 0), frozen.get(cls, 0))
        for cls in sorted({*detained, *frozen}, key=lambda c: c.key)
    }


def detained_blocks(
    holding: Sequence[SerialBlock], detentions: DetentionLookup | None
) -> list[SerialBlock]:
    """The serials of ``holding`` some detention in force holds, each once (two
    detentions of one unit, a project's and its class's, count it once), sorted."""
    if not detentions:
        return []
    find = _finder(detentions)
    found: list[SerialBlock] = []
    for block in holding:
        project = block.unit_class.project
        if not project:
            continue
        rest = [block]
        for detention in find(project):
            taken = [p for r in rest for p in detention.detained_parts(r)]
            for part in taken:
                _cut(rest, part)
            found.extend(taken)
    return sorted(found)


def _cut(result: list[SerialBlock], cut: SerialBlock) -> None:
    """Remove whatever part of ``cut`` the sorted, disjoint ``result`` holds, in place."""
    index = max(bisect_right(result, start(cut), key=start) - 1, 0)
    end = (cut.unit_class, cut.last)
    while index < len(result):
        block = result[index]
        if start(block) > end:
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


def _finder(detentions: DetentionLookup) -> Callable[[str], Sequence[OriginDetention]]:
    """Any lookup as one answering a sequence of detentions for a project."""
    lookup = detentions.get if isinstance(detentions, Mapping) else detentions

    def find(project: str) -> Sequence[OriginDetention]:
        found = lookup(project)
        if found is None:
            return ()
        if isinstance(found, OriginDetention):
            return (found,)
        return found

    return find

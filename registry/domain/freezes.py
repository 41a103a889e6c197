"""Restrictions on moving units: judicial block freezes, origin detentions, the market halt.

Three aggregates, each with its own id, so that every refusal names the restriction
that caused it (its id and reference travel in the error's metadata):

- ``BlockFreeze``: a court order freezes specific serial blocks in one account. While
  active those serials cannot leave that account (by any kind of transaction); released
  by a later event that records the evidence (e.g. the ruling that lifts it). Its id
  comes from a client-chosen freeze id that is unique registry-wide (not scoped by
  party: a court order is named the same way by every regulator who refers to it).
- ``OriginDetention``: every unit of one CCER project is detained wherever it is (any
  account, any kind, issuance of more units included) until a regulator clears it on
  evidence. One aggregate per project (id from the project id); it can be detained,
  cleared and detained again. A second ``detain`` while detained is a *replay* (no
  event) when it carries a reference already used for this project, and refused
  (``ORIGIN_ALREADY_DETAINED``, naming the active detention) otherwise. Deleting units
  found fraudulent is done by clearing and cancelling them in one atomic save, so no
  window opens in which they could move.
- ``MarketHalt``: one aggregate for the registry (fixed id). While halted, exchange
  settlement (``HALTED_KINDS``) is refused; surrender, allocation and every other kind
  go on.

Four eyes is not repeated here: the application carries out an approved
``registry.domain.proposals.Proposal`` and passes its reference as ``proposal``, so each
change records who proposed and approved it (through the proposal), who carried it out,
when (``at``, passed in: the domain never reads a clock) and why.

The guards (``check_movement`` and the three it combines) are pure functions the
application calls before moving units; ``movable`` is what FIFO selection should take
from, so that a frozen or detained block does not refuse a movement that other units of
the account could have served.

State is primitive (blocks as ``[unit class key, first, last]``, datetimes through the
store's ISO transcoding), so snapshots round-trip through the JSON transcoder; events
replace attributes rather than mutate them, so cached copies stay independent.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.accounts import check_account_id
from registry.domain.errors import (
    DetentionNotActive,
    FreezeExistsWithDifferentContent,
    FreezeNotActive,
    InvalidCommand,
    MarketAlreadyHalted,
    MarketHalted,
    MarketNotHalted,
    OriginAlreadyDetained,
    OriginDetained,
    SerialsFrozen,
)
from registry.domain.ids import NAMESPACE, check_client_id
from registry.domain.reasons import check_reason
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitClass, UnitType, parse_unit_type

MAX_REFERENCE = 200
"""Court case numbers, decision numbers and evidence references are short identifiers."""
MAX_PROJECT = 128

HALTED_KINDS: frozenset[TransactionKind] = frozenset({TransactionKind.SETTLEMENT})
"""What a market halt stops: exchange settlement only. Compliance (surrender), allocation
and administrative movements must go on during a trading emergency."""

PROJECT_ID = re.compile(r"[^\s/]+")
"""A project id is one token: ``/`` separates the parts of a unit class key."""

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


def check_origin(project: str, unit_type: UnitType | str = UnitType.CCER) -> str:
    """The origin a detention names: a CCER project id. Allowances have no origin project,
    so a CEA "origin" is refused rather than silently detaining nothing."""
    kind = unit_type if isinstance(unit_type, UnitType) else parse_unit_type(unit_type)
    if kind is not UnitType.CCER:
        raise InvalidCommand(
            f"only CCER units have an origin project, not {kind}",
            reason="NOT_CCER_ORIGIN",
            unit_type=kind,
        )
    if not isinstance(project, str) or not project:
        raise InvalidCommand(
            "the origin project id is required", reason="MISSING_ORIGIN", field="project"
        )
    if len(project) > MAX_PROJECT or not project.isprintable() or not PROJECT_ID.fullmatch(project):
        raise InvalidCommand(
            f"origin {project!r} must be a project id (1-{MAX_PROJECT} characters, no "
            "spaces or '/'), not a unit class",
            reason="INVALID_ORIGIN",
            field="project",
        )
    return project


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


def _aware(at: datetime) -> datetime:
    """A naive time is the caller's defect, not a client error: fail loudly."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"time must be a timezone-aware datetime, got {at!r}")
    return at


def _who(principal: Principal | str) -> str:
    who = str(principal)
    if not who:
        raise ValueError("every change names the principal who made it")
    return who


@lru_cache(maxsize=4096)
def _unit_class(key: str) -> UnitClass:
    """Parsed once per class: guards rebuild frozen blocks on every movement checked."""
    return UnitClass.from_key(key)


def _row(block: SerialBlock) -> BlockRow:
    return [block.unit_class.key, block.first, block.last]


def _block(row: Sequence[Any]) -> SerialBlock:
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


def _entry(
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


class _History:
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


# -- judicial block freeze ------------------------------------------------------------------


class FreezeStatus(StrEnum):
    ACTIVE = "ACTIVE"
    RELEASED = "RELEASED"


class BlockFreeze(_History, Aggregate):
    """A court order freezing specific serial blocks of one account."""

    TOPIC = "registry.BlockFreeze"

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.freeze_id = ""
        self.account_id = ""
        self.order_reference = ""
        self.blocks: list[BlockRow] = []
        self.quantity = 0
        self.status_name = FreezeStatus.ACTIVE.value
        self.reason = ""
        self.imposed_by = ""
        self.imposed_at: datetime | None = None
        self.released_by = ""
        self.released_at: datetime | None = None
        self.release_reason = ""
        self.release_evidence = ""

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(freeze_id: str) -> UUID:
        return uuid5(NAMESPACE, f"block-freeze:{freeze_id}")

    @property
    def status(self) -> FreezeStatus:
        return FreezeStatus(self.status_name)

    @property
    def is_active(self) -> bool:
        return self.status_name == FreezeStatus.ACTIVE.value

    @property
    def frozen_blocks(self) -> Holding:
        """The frozen serials, sorted and disjoint (parsed from primitive state)."""
        return tuple(_block(row) for row in self.blocks)

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.BlockFreeze.Created"

    class Imposed(Aggregate.Created):
        TOPIC = "registry.BlockFreeze.Imposed"
        freeze_id: str
        account_id: str
        order_reference: str
        blocks: list[SerialBlock]
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, freeze: BlockFreeze) -> None:
            freeze.freeze_id = self.freeze_id
            freeze.account_id = self.account_id
            freeze.order_reference = self.order_reference
            freeze.blocks = [_row(b) for b in self.blocks]
            freeze.quantity = sum(b.quantity for b in self.blocks)
            freeze.reason = self.reason
            freeze.imposed_by = self.principal
            freeze.imposed_at = self.at
            freeze._log(
                _entry(
                    "IMPOSED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=self.order_reference,
                    proposal=self.proposal,
                )
            )

    class Released(Aggregate.Event):
        TOPIC = "registry.BlockFreeze.Released"
        reason: str
        evidence: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, freeze: BlockFreeze) -> None:
            freeze.status_name = FreezeStatus.RELEASED.value
            freeze.released_by = self.principal
            freeze.released_at = self.at
            freeze.release_reason = self.reason
            freeze.release_evidence = self.evidence
            freeze._log(
                _entry(
                    "RELEASED",
                    self.at,
                    self.principal,
                    self.reason,
                    evidence=self.evidence,
                    proposal=self.proposal,
                )
            )

    # -- creation -------------------------------------------------------------------

    @classmethod
    def impose(
        cls,
        *,
        freeze_id: str,
        account_id: str,
        blocks: Iterable[SerialBlock],
        order_reference: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> BlockFreeze:
        """Freeze ``blocks`` in ``account_id`` under a court order. Whether the account
        holds them is the application's check (``units.remove`` names a missing one).

        For an id that may exist, the application loads it first and asks
        :meth:`ensure_same_request`: a retry must not create a second freeze."""
        check_client_id(freeze_id, "freeze id")
        check_account_id(account_id)
        check_reference(order_reference, "order_reference")
        check_reason(reason)
        joined = check_blocks(blocks)
        return cls._create(
            cls.Imposed,
            id=cls.id_for(freeze_id),
            freeze_id=freeze_id,
            account_id=account_id,
            order_reference=order_reference,
            blocks=list(joined),
            reason=reason,
            principal=_who(principal),
            at=_aware(at),
            proposal=proposal,
        )

    # -- guards and commands ------------------------------------------------------

    def ensure_same_request(
        self, *, account_id: str, blocks: Iterable[SerialBlock], order_reference: str
    ) -> None:
        """A retried ``impose`` (same account, serials and court order) is a replay: answer
        with this freeze. The reason's wording is not content. Anything else is refused."""
        joined = check_blocks(blocks)
        if (account_id, order_reference, joined) != (
            self.account_id,
            self.order_reference,
            self.frozen_blocks,
        ):
            raise FreezeExistsWithDifferentContent(
                f"freeze {self.freeze_id} exists with other content (court order "
                f"{self.order_reference}, account {self.account_id})",
                freeze=self.freeze_id,
                order_reference=self.order_reference,
            )

    def release(
        self,
        *,
        reason: str,
        evidence: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Lift the freeze; True if this call did, False for a retry (same evidence)."""
        check_reason(reason)
        check_evidence(evidence)
        _aware(at)
        if not self.is_active:
            if evidence == self.release_evidence:
                return False
            raise FreezeNotActive(
                f"freeze {self.freeze_id} was released on {self.released_at} by {self.released_by}",
                freeze=self.freeze_id,
                order_reference=self.order_reference,
                status=self.status_name,
            )
        self.trigger_event(
            self.Released,
            reason=reason,
            evidence=evidence,
            principal=_who(principal),
            at=at,
            proposal=proposal,
        )
        return True


# -- origin detention ------------------------------------------------------------------------


class DetentionStatus(StrEnum):
    NOT_DETAINED = "NOT_DETAINED"
    """Started, never detained (the creation event precedes the first detention)."""
    DETAINED = "DETAINED"
    CLEARED = "CLEARED"


class OriginDetention(_History, Aggregate):
    """Every unit of one CCER project, detained wherever it is until cleared on evidence."""

    TOPIC = "registry.OriginDetention"

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.project = ""
        self.status_name = DetentionStatus.NOT_DETAINED.value
        self.reference = ""
        self.reason = ""
        self.detained_by = ""
        self.detained_at: datetime | None = None
        self.cleared_by = ""
        self.cleared_at: datetime | None = None
        self.clearance_reason = ""
        self.evidence = ""
        self.references: list[str] = []
        """Every detention reference used for this project: a retry of any of them is
        answered, not repeated (even after the detention it made was cleared)."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(project: str) -> UUID:
        return uuid5(NAMESPACE, f"origin-detention:{project}")

    @property
    def status(self) -> DetentionStatus:
        return DetentionStatus(self.status_name)

    @property
    def is_active(self) -> bool:
        return self.status_name == DetentionStatus.DETAINED.value

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.OriginDetention.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.OriginDetention.Started"
        project: str

        def apply(self, detention: OriginDetention) -> None:
            detention.project = self.project

    class Detained(Aggregate.Event):
        TOPIC = "registry.OriginDetention.Detained"
        reference: str
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, detention: OriginDetention) -> None:
            detention.status_name = DetentionStatus.DETAINED.value
            detention.reference = self.reference
            detention.reason = self.reason
            detention.detained_by = self.principal
            detention.detained_at = self.at
            detention.references = [*detention.references, self.reference]
            detention._log(
                _entry(
                    "DETAINED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=self.reference,
                    proposal=self.proposal,
                )
            )

    class Cleared(Aggregate.Event):
        TOPIC = "registry.OriginDetention.Cleared"
        reason: str
        evidence: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, detention: OriginDetention) -> None:
            detention.status_name = DetentionStatus.CLEARED.value
            detention.cleared_by = self.principal
            detention.cleared_at = self.at
            detention.clearance_reason = self.reason
            detention.evidence = self.evidence
            detention._log(
                _entry(
                    "CLEARED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=detention.reference,
                    evidence=self.evidence,
                    proposal=self.proposal,
                )
            )

    # -- creation and commands -----------------------------------------------------

    @classmethod
    def start(cls, project: str, unit_type: UnitType | str = UnitType.CCER) -> OriginDetention:
        """The (not yet detaining) record of a project; the application starts it on the
        project's first detention and calls :meth:`detain` on it in the same save."""
        check_origin(project, unit_type)
        return cls._create(cls.Started, id=cls.id_for(project), project=project)

    def detain(
        self,
        *,
        reference: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Detain the project's units; True if this call did, False for a retry (a
        reference already used for this project). Detained under another reference:
        refused, naming the active detention."""
        check_reference(reference)
        check_reason(reason)
        _aware(at)
        if reference in self.references:
            return False
        if self.is_active:
            raise OriginAlreadyDetained(
                f"project {self.project} is already detained under {self.reference}",
                project=self.project,
                detention=self.reference,
            )
        self.trigger_event(
            self.Detained,
            reference=reference,
            reason=reason,
            principal=_who(principal),
            at=at,
            proposal=proposal,
        )
        return True

    def clear(
        self,
        *,
        evidence: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Release the project's units on evidence; True if this call did, False for a
        retry (the clearance already recorded this evidence)."""
        check_evidence(evidence)
        check_reason(reason)
        _aware(at)
        if not self.is_active:
            if self.status is DetentionStatus.CLEARED and evidence == self.evidence:
                return False
            raise DetentionNotActive(
                f"project {self.project} is not detained",
                project=self.project,
                status=self.status_name,
            )
        self.trigger_event(
            self.Cleared,
            reason=reason,
            evidence=evidence,
            principal=_who(principal),
            at=at,
            proposal=proposal,
        )
        return True


# -- market halt -------------------------------------------------------------------------------


class MarketStatus(StrEnum):
    OPEN = "OPEN"
    HALTED = "HALTED"


class MarketHalt(_History, Aggregate):
    """The registry's one market-halt switch (fixed id)."""

    TOPIC = "registry.MarketHalt"
    ID = uuid5(NAMESPACE, "market-halt")

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.status_name = MarketStatus.OPEN.value
        self.reason = ""
        self.halted_by = ""
        self.halted_at: datetime | None = None
        self.lifted_by = ""
        self.lifted_at: datetime | None = None
        self.lift_reason = ""

    @staticmethod
    def id_for() -> UUID:
        return MarketHalt.ID

    @property
    def status(self) -> MarketStatus:
        return MarketStatus(self.status_name)

    @property
    def is_halted(self) -> bool:
        return self.status_name == MarketStatus.HALTED.value

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.MarketHalt.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.MarketHalt.Started"

        def apply(self, halt: MarketHalt) -> None:
            halt.status_name = MarketStatus.OPEN.value

    class Halted(Aggregate.Event):
        TOPIC = "registry.MarketHalt.Halted"
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, halt: MarketHalt) -> None:
            halt.status_name = MarketStatus.HALTED.value
            halt.reason = self.reason
            halt.halted_by = self.principal
            halt.halted_at = self.at
            halt._log(
                _entry("HALTED", self.at, self.principal, self.reason, proposal=self.proposal)
            )

    class Lifted(Aggregate.Event):
        TOPIC = "registry.MarketHalt.Lifted"
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, halt: MarketHalt) -> None:
            halt.status_name = MarketStatus.OPEN.value
            halt.lifted_by = self.principal
            halt.lifted_at = self.at
            halt.lift_reason = self.reason
            halt._log(
                _entry("LIFTED", self.at, self.principal, self.reason, proposal=self.proposal)
            )

    # -- creation and commands -----------------------------------------------------

    @classmethod
    def start(cls) -> MarketHalt:
        """The switch, open; the application starts it on the first halt."""
        return cls._create(cls.Started, id=cls.ID)

    def halt(
        self, *, reason: str, principal: Principal | str, at: datetime, proposal: str = ""
    ) -> bool:
        """Halt settlement; True if this call did, False for a retry (already halted
        for the same reason). Halted for another reason: refused, naming that halt."""
        check_reason(reason)
        _aware(at)
        if self.is_halted:
            if reason == self.reason:
                return False
            raise MarketAlreadyHalted(
                f"the market is already halted since {self.halted_at} by {self.halted_by}: "
                f"{self.reason}",
                halted_at=self.halted_at,
                halted_by=self.halted_by,
            )
        self.trigger_event(
            self.Halted, reason=reason, principal=_who(principal), at=at, proposal=proposal
        )
        return True

    def lift(
        self, *, reason: str, principal: Principal | str, at: datetime, proposal: str = ""
    ) -> bool:
        """Resume settlement; True if this call did, False for a retry (the last lift
        had the same reason)."""
        check_reason(reason)
        _aware(at)
        if not self.is_halted:
            if self.lifted_at is not None and reason == self.lift_reason:
                return False
            raise MarketNotHalted("the market is not halted", status=self.status_name)
        self.trigger_event(
            self.Lifted, reason=reason, principal=_who(principal), at=at, proposal=proposal
        )
        return True


# -- guards ------------------------------------------------------------------------------------


DetentionLookup: TypeAlias = Mapping[str, OriginDetention] | Callable[[str], OriginDetention | None]
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


def check_movement(
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

"""Which restrictions are in force, in one aggregate every movement reads.

Judicial freezes, origin detentions and the market halt are aggregates of their own
(``registry.domain.block_freezes``, ``.origin_detentions``, ``.market_halt``). A
movement cannot look each of them up (a freeze is found by its id, not by account),
and most of the time none is in force: this index,
saved together with every change to them and always cached, tells a movement in one
read whether anything may stop it, and which restrictions to load if so.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.ids import NAMESPACE
from registry.domain.origin_detentions import Origin, OriginDetention, OriginKind
from registry.domain.transactions import TransactionKind
from registry.domain.units import UnitType


class RestrictionIndex(Aggregate):
    TOPIC = "registry.RestrictionIndex"

    def __init__(self) -> None:
        self.freezes: dict[str, list[str]] = {}
        """Account id -> ids of the block freezes in force on it."""
        self.detained: list[str] = []
        """CCER projects whose units are detained."""
        self.halted = False
        self.origins: dict[str, list[str]] = {}
        """Origin key -> the projects it was resolved to, for detentions of origins
        other than a whole project (those are ``detained``, as before origins had
        kinds): a unit class's one project, a predicate's matches (grown when a matching
        project is registered later). Replaced, never mutated, by its events."""

    @staticmethod
    @cache  # asked once per movement (check_restrictions): uuid5 hashes every time
    def id_for() -> UUID:
        return uuid5(NAMESPACE, "restriction-index")

    class Created(Aggregate.Created):
        TOPIC = "registry.RestrictionIndex.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.RestrictionIndex.Started"

    class FreezeIndexed(Aggregate.Event):
        TOPIC = "registry.RestrictionIndex.FreezeIndexed"
        account_id: str
        freeze_id: str
        active: bool

        def apply(self, index: RestrictionIndex) -> None:
            ids = [i for i in index.freezes.get(self.account_id, []) if i != self.freeze_id]
            if self.active:
                ids.append(self.freeze_id)
            freezes = {**index.freezes, self.account_id: ids}
            index.freezes = {k: v for k, v in freezes.items() if v}

    class DetentionIndexed(Aggregate.Event):
        TOPIC = "registry.RestrictionIndex.DetentionIndexed"
        project: str
        active: bool

        def apply(self, index: RestrictionIndex) -> None:
            others = [p for p in index.detained if p != self.project]
            index.detained = sorted([*others, self.project]) if self.active else others

    class OriginIndexed(Aggregate.Event):
        TOPIC = "registry.RestrictionIndex.OriginIndexed"
        origin: str
        projects: list[str]
        active: bool

        def apply(self, index: RestrictionIndex) -> None:
            others = {k: v for k, v in index.origins.items() if k != self.origin}
            if self.active:
                others[self.origin] = sorted(self.projects)
            index.origins = others

    class HaltIndexed(Aggregate.Event):
        TOPIC = "registry.RestrictionIndex.HaltIndexed"
        halted: bool

        def apply(self, index: RestrictionIndex) -> None:
            index.halted = self.halted

    @classmethod
    def start(cls) -> RestrictionIndex:
        return cls._create(cls.Started, id=cls.id_for())

    def may_restrict(self, account_id: str, kind: TransactionKind, unit_type: UnitType) -> bool:
        """Whether anything in force could stop this movement (then the movement loads
        the restrictions and checks the blocks it would take)."""
        return (
            account_id in self.freezes
            or ((bool(self.detained) or bool(self.origins)) and unit_type is UnitType.CCER)
            or (self.halted and kind is TransactionKind.SETTLEMENT)
        )

    def index_freeze(self, account_id: str, freeze_id: str, active: bool) -> None:
        if (freeze_id in self.freezes.get(account_id, [])) != active:
            self.trigger_event(
                self.FreezeIndexed, account_id=account_id, freeze_id=freeze_id, active=active
            )

    def index_detention(self, project: str, active: bool) -> None:
        if (project in self.detained) != active:
            self.trigger_event(self.DetentionIndexed, project=project, active=active)

    def detains(self, project: str) -> bool:
        """Whether any detention in force may cover units of ``project``."""
        return project in self.detained or any(project in p for p in self.origins.values())

    @property
    def any_detained(self) -> bool:
        return bool(self.detained) or bool(self.origins)

    def detention_ids(self, project: str) -> list[UUID]:
        """The detentions in force that may cover units of ``project``."""
        ids = [OriginDetention.id_for(project)] if project in self.detained else []
        ids.extend(
            OriginDetention.id_for_origin(Origin.parse(key))
            for key, projects in self.origins.items()
            if project in projects
        )
        return ids

    def index_origin(
        self, origin: Origin, active: bool, projects: Sequence[str] | None = None
    ) -> None:
        """Index a detention of ``origin`` in force (or no longer): a project's as
        before origins had kinds, any other with the projects it resolved to
        (``projects``: a predicate's, as recorded on the detention). A predicate in
        force whose projects grew (a matching project registered later) is indexed
        again with them."""
        if origin.kind is OriginKind.PROJECT:
            self.index_detention(origin.value, active)
            return
        resolved = sorted(set(origin.projects if projects is None else projects))
        if active and self.origins.get(origin.key) == resolved:
            return
        if not active and origin.key not in self.origins:
            return
        self.trigger_event(self.OriginIndexed, origin=origin.key, projects=resolved, active=active)

    def predicate_origins(self) -> list[Origin]:
        """The predicate origins (province, developer, verifier, methodology) in force:
        those a newly registered project may fall under."""
        found = (Origin.parse(key) for key in self.origins)
        return [o for o in found if o.kind.is_predicate]

    def index_halt(self, halted: bool) -> None:
        if self.halted != halted:
            self.trigger_event(self.HaltIndexed, halted=halted)

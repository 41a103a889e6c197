"""Judicial freezes of serial blocks, detention of an origin's units, and the market
halt: imposing and lifting them (each through an approved proposal, see ``four_eyes``),
what they restrict (per account, and listed), and the check every movement makes before
it moves anything. A detention's rebuttals and confirmation are ``origins``'.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.domain import units
from registry.domain.accounts import Account
from registry.domain.block_freezes import BlockFreeze
from registry.domain.errors import UnknownFreeze
from registry.domain.market_halt import MarketHalt
from registry.domain.origin_detentions import (
    DetainedHolder,
    DetentionStatus,
    Origin,
    OriginDetention,
    check_rebuttal_days,
)
from registry.domain.projects import Project, matching
from registry.domain.restriction_guards import (
    check_issuable,
    check_unrestricted,
    movable,
    restricted_quantities,
)
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitClass, UnitSelector


@dataclass(frozen=True)
class RestrictionView:
    """One restriction as a regulator, auditor or holder reads it.

    ``kind``: ``ACCOUNT_FREEZE``, ``BLOCK_FREEZE``, ``ORIGIN_DETENTION``, ``MARKET_HALT``;
    ``restriction_id``: the account, freeze id, detained origin or ``market``;
    ``state``: ``ACTIVE`` or ``LIFTED`` (a detention: its own status); ``accounts``: the
    accounts it touches (``()`` for the market halt, which touches every account)."""

    kind: str
    restriction_id: str
    state: str
    accounts: tuple[str, ...] = ()
    origin: str = ""
    reference: str = ""
    reason: str = ""
    principal: str = ""
    since: datetime | None = None
    blocks: tuple[SerialBlock, ...] = ()
    quantity: int = 0
    holders: tuple[DetainedHolder, ...] = ()
    """A detention's notified holders: each one's state and rebuttal deadline."""


class Restrictions:
    """The restriction use cases of one registry; each returns a line saying what it did."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._held_index: RestrictionIndex | None = None
        """The restriction index as last read for a balance (``_index_at``)."""
        self._held_lock = threading.Lock()
        self.index_loads = 0
        """How many times ``_index_at`` read the index from the store (tests count it)."""

    def freeze_blocks(
        self,
        principal: Principal,
        freeze_id: str,
        account_id: str,
        blocks: Sequence[SerialBlock],
        order_reference: str,
        reason: str,
        proposal: str = "",
    ) -> str:
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            existing = uow.find(BlockFreeze.id_for(freeze_id), BlockFreeze)
            if existing is not None:
                existing.ensure_same_request(
                    account_id=account_id, blocks=blocks, order_reference=order_reference
                )
                return f"freeze {freeze_id} in force"
            account = uow.account(account_id)
            units.remove(account.available, blocks)  # UNITS_NOT_HELD names a missing block
            freeze = uow.add(
                BlockFreeze.impose(
                    freeze_id=freeze_id,
                    account_id=account_id,
                    blocks=blocks,
                    order_reference=order_reference,
                    reason=reason,
                    principal=principal,
                    at=store.clock(),
                    proposal=proposal,
                )
            )
            self._index(uow).index_freeze(account_id, freeze_id, True)
            uow.save()
            return f"freeze {freeze.freeze_id} on {account_id}: {freeze.quantity} units"

        return store.retrying(attempt)

    def release_blocks(
        self, principal: Principal, freeze_id: str, reason: str, evidence: str, proposal: str = ""
    ) -> str:
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            freeze = uow.find(BlockFreeze.id_for(freeze_id), BlockFreeze)
            if freeze is None:
                raise UnknownFreeze(f"no freeze {freeze_id}", freeze=freeze_id)
            if freeze.release(
                reason=reason,
                evidence=evidence,
                principal=principal,
                at=store.clock(),
                proposal=proposal,
            ):
                self._index(uow).index_freeze(freeze.account_id, freeze_id, False)
                uow.save()
            return f"freeze {freeze_id} released"

        return store.retrying(attempt)

    def detain_origin(
        self,
        principal: Principal,
        project: str,
        reference: str,
        reason: str,
        proposal: str = "",
        rebuttal_days: int | None = None,
    ) -> str:
        """Detain every unit of an origin (a project id, or an ``Origin`` key such as
        ``UNIT_CLASS:CCER/2024/P-1`` or ``PROVINCE:Hebei``) and, in the same save, record
        the projects a predicate origin matches now and notify each account holding
        units of them with the deadline of its rebuttal (``rebuttal_days``, default 30)."""
        origin = Origin.parse(project)
        check_rebuttal_days(rebuttal_days)
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            detention = uow.find(OriginDetention.id_for_origin(origin), OriginDetention) or uow.add(
                OriginDetention.start(origin)
            )
            now = store.clock()
            if detention.detain(
                reference=reference,
                reason=reason,
                principal=principal,
                at=now,
                proposal=proposal,
            ):
                if origin.kind.is_predicate:
                    detention.resolve(resolve_projects(uow, store, origin), at=now)
                restriction_index(uow).index_origin(origin, True, detention.projects)
                for account_id, quantity in holders_of(uow, store, detention).items():
                    detention.notify(account_id, quantity, at=now, days=rebuttal_days)
                uow.save()
            return (
                f"origin {origin} detained under {reference}: "
                f"{len(detention.holders)} holders notified"
            )

        return store.retrying(attempt)

    def clear_origin(
        self, principal: Principal, project: str, evidence: str, reason: str, proposal: str = ""
    ) -> str:
        origin = Origin.parse(project)
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            detention = uow.find(
                OriginDetention.id_for_origin(origin), OriginDetention
            ) or OriginDetention.start(origin)
            if detention.clear(
                evidence=evidence,
                reason=reason,
                principal=principal,
                at=store.clock(),
                proposal=proposal,
            ):
                restriction_index(uow).index_origin(origin, False)
                uow.save()
            return f"origin {origin} cleared on {evidence}"

        return store.retrying(attempt)

    def halt_market(
        self, principal: Principal, reason: str, halted: bool, proposal: str = ""
    ) -> str:
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            halt = uow.find(MarketHalt.id_for(), MarketHalt) or uow.add(MarketHalt.start())
            change = halt.halt if halted else halt.lift
            if change(reason=reason, principal=principal, at=store.clock(), proposal=proposal):
                self._index(uow).index_halt(halted)
                uow.save()
            return "market halted" if halted else "market open"

        return store.retrying(attempt)

    # -- what is restricted ----------------------------------------------------------

    def restricted_quantities(
        self,
        account_id: str,
        *,
        index_version: int | None = None,
        projects: Iterable[str] | None = None,
    ) -> dict[str, tuple[int, int]]:
        """(detained, frozen) units per unit class key of one account, from the write
        model: the restrictions as committed when the index's version was read.

        ``index_version``: the restriction index's stored version, read by the caller
        in its own query after the call began (GetBalances reads it with the holdings):
        a copy of the index at that version or newer, kept from an earlier call, is
        then used as it is; an older one is replaced by a fresh load. So a detention
        or freeze committed before the call began is always seen (never shown as free),
        and nothing is read from the store while nothing changed. None: the index is
        read from the store now (one round trip), as before.

        ``projects``: the projects of the unit classes the caller will show (its
        holdings): when none of them is detained and the account has no freeze, there
        is nothing to compute, whatever else is detained. None: any may be."""
        index = self._index_at(index_version)
        if index is None or not (
            account_id in index.freezes
            or (
                index.any_detained
                and (projects is None or any(p and index.detains(p) for p in projects))
            )
        ):
            return {}
        uow = UnitOfWork(self._store.app)
        account = uow.find(Account.id_for(account_id), Account)
        if account is None:
            return {}
        freezes = [
            f
            for f in (
                uow.find(BlockFreeze.id_for(i), BlockFreeze)
                for i in index.freezes.get(account_id, [])
            )
            if f is not None
        ]
        found = restricted_quantities(
            account.all_blocks,
            account_id=account_id,
            block_freezes=freezes,
            detentions=detention_lookup(uow, index),
        )
        return {cls.key: quantities for cls, quantities in found.items()}

    def _index_at(self, version: int | None) -> RestrictionIndex | None:
        """The restriction index at ``version`` or newer (None: the latest, read now);
        None when there is none. The copy kept is never mutated: each load is a
        fresh one (the repository copies what it caches)."""
        if version is not None:
            if version == 0:
                return None
            held = self._held_index
            if held is not None and held.version >= version:
                return held
        loaded = UnitOfWork(self._store.app).find(RestrictionIndex.id_for(), RestrictionIndex)
        self.index_loads += 1  # a lost increment between threads costs one count
        if loaded is not None:
            with self._held_lock:
                held = self._held_index
                if held is None or loaded.version > held.version:
                    self._held_index = loaded
        return loaded

    def list_restrictions(self, include_lifted: bool = False) -> list[RestrictionView]:
        """Block freezes, origin detentions and the market halt, in force (and, with
        ``include_lifted``, those released, cleared or lifted), oldest first. Account
        freezes are the account directory's (a read model): the servicer adds them."""
        store = self._store
        uow = UnitOfWork(store.app)
        views: list[RestrictionView] = []
        for freeze_uuid in store.originators(BlockFreeze.Imposed.TOPIC):
            freeze = uow.find(freeze_uuid, BlockFreeze)
            if freeze is None or not (freeze.is_active or include_lifted):
                continue
            views.append(
                RestrictionView(
                    kind="BLOCK_FREEZE",
                    restriction_id=freeze.freeze_id,
                    state="ACTIVE" if freeze.is_active else "LIFTED",
                    accounts=(freeze.account_id,),
                    reference=freeze.order_reference,
                    reason=freeze.reason,
                    principal=freeze.imposed_by,
                    since=freeze.imposed_at,
                    blocks=tuple(freeze.frozen_blocks),
                    quantity=freeze.quantity,
                )
            )
        for detention_uuid in store.originators(OriginDetention.Started.TOPIC):
            detention = uow.find(detention_uuid, OriginDetention)
            if detention is None or detention.status is DetentionStatus.NOT_DETAINED:
                continue
            if not (detention.is_active or include_lifted):
                continue
            views.append(self._detention_view(detention))
        halt = uow.find(MarketHalt.id_for(), MarketHalt)
        if halt is not None and (halt.is_halted or (include_lifted and halt.halted_at)):
            views.append(
                RestrictionView(
                    kind="MARKET_HALT",
                    restriction_id="market",
                    state="ACTIVE" if halt.is_halted else "LIFTED",
                    reason=halt.reason,
                    principal=halt.halted_by,
                    since=halt.halted_at,
                )
            )
        return views

    @staticmethod
    def _detention_view(detention: OriginDetention) -> RestrictionView:
        holders = detention.notified
        return RestrictionView(
            kind="ORIGIN_DETENTION",
            restriction_id=detention.origin.key,
            state=detention.status_name,
            accounts=tuple(h.account_id for h in holders),
            origin=detention.origin.key,
            reference=detention.reference,
            reason=detention.reason,
            principal=detention.detained_by,
            since=detention.detained_at,
            quantity=sum(h.quantity for h in holders),
            holders=holders,
        )

    @staticmethod
    def _index(uow: UnitOfWork) -> RestrictionIndex:
        return restriction_index(uow)


def restriction_index(uow: UnitOfWork) -> RestrictionIndex:
    """The index of restrictions in force, started on the first one."""
    return uow.find(RestrictionIndex.id_for(), RestrictionIndex) or uow.add(
        RestrictionIndex.start()
    )


def detention_lookup(
    uow: UnitOfWork, index: RestrictionIndex
) -> Callable[[str], list[OriginDetention]]:
    """The detentions in force that may cover a project's units, loaded on demand."""

    def find(project: str) -> list[OriginDetention]:
        found = (uow.find(i, OriginDetention) for i in index.detention_ids(project))
        return [d for d in found if d is not None]

    return find


def every_account(uow: UnitOfWork, store: Store) -> list[Account]:
    """Every account, loaded in one prefetch (a detention touches units wherever they are;
    imposing or confirming one is rare, so a scan is cheaper than an index kept on every
    movement)."""
    ids = list(store.originators(Account.Opened.TOPIC))
    uow.prefetch(ids, store.load_many)
    return [a for a in (uow.find(i, Account) for i in ids) if a is not None]


def resolve_projects(uow: UnitOfWork, store: Store, origin: Origin) -> list[str]:
    """The registered projects (any status) a predicate origin matches, read in the
    imposition's unit of work (the same question as ``Projects.matching``)."""
    ids = list(store.originators(Project.Registered.TOPIC))
    uow.prefetch(ids, store.load_many)
    found = (uow.find(i, Project) for i in ids)
    return [v.project_id for v in matching((p for p in found if p is not None), origin.query())]


def cover_registered_project(
    uow: UnitOfWork, principal: Principal, project: Project, reference: str, at: datetime
) -> list[str]:
    """Add a project being registered (in ``uow``, saved with it) to every predicate
    detention in force it matches, on the record (``ProjectMatched``) and in the
    index, so its issuance is refused ``ORIGIN_DETAINED`` from the start. The origins
    it was added to; nothing to read when no predicate origin is in force."""
    index = uow.find(RestrictionIndex.id_for(), RestrictionIndex)
    if index is None:
        return []
    added: list[str] = []
    details = project.details
    for origin in index.predicate_origins():
        detention = uow.find(OriginDetention.id_for_origin(origin), OriginDetention)
        if detention is not None and detention.add_project(
            project.project_id, details, reference=reference, principal=principal, at=at
        ):
            index.index_origin(origin, True, detention.projects)
            added.append(origin.key)
    return added


def holders_of(uow: UnitOfWork, store: Store, detention: OriginDetention) -> dict[str, int]:
    """Each holder's account holding units of the detention's origin (held ones
    included), with how many: the holders notified. National accounts are the
    registry's own: their units are detained (and forfeited) too, but nobody there
    rebuts."""
    found: dict[str, int] = {}
    for account in every_account(uow, store):
        if account.account_type.is_national:
            continue
        quantity = sum(b.quantity for b in account.all_blocks if detention.matches(b.unit_class))
        if quantity:
            found[account.account_id] = quantity
    return dict(sorted(found.items()))


def check_restrictions(
    uow: UnitOfWork,
    source: Account,
    kind: TransactionKind,
    selector: UnitSelector,
    quantity: int,
    blocks: Sequence[SerialBlock] | None = None,
) -> Holding | None:
    """Refuse a movement a freeze, a detention or the halt stops, naming it; nothing to
    load and nothing to check when the index says nothing is in force (the usual case).

    ``blocks``: what moves, when fixed (a hold's). Otherwise restricted units are skipped
    rather than taken: when the account's unrestricted units cover the movement, they
    are returned as the pool to take from (None: take as usual); only when they do not
    is the movement refused, naming the freeze or detention in the way."""
    index = uow.find(RestrictionIndex.id_for(), RestrictionIndex)
    if index is None or not index.may_restrict(source.account_id, kind, selector.unit_type):
        return None
    freezes = [
        f
        for f in (
            uow.find(BlockFreeze.id_for(i), BlockFreeze)
            for i in index.freezes.get(source.account_id, [])
        )
        if f is not None
    ]
    detentions = detention_lookup(uow, index)
    halt = uow.find(MarketHalt.id_for(), MarketHalt)
    pool = None
    if blocks is None:
        unrestricted = movable(
            source.available,
            account_id=source.account_id,
            block_freezes=freezes,
            detentions=detentions,
        )
        if units.total(unrestricted, selector) >= quantity:
            pool, blocks = unrestricted, units.take(unrestricted, selector, quantity)[0]
        else:
            blocks = source.would_debit(selector, quantity)
    check_unrestricted(
        blocks,
        source_account=source.account_id,
        kind=kind,
        block_freezes=freezes,
        detentions=detentions,
        halt=halt,
    )
    return pool


def check_issuance(uow: UnitOfWork, unit_class: UnitClass, quantity: int) -> None:
    """Refuse issuing more units of a detained origin (``ORIGIN_DETAINED``): a detention
    covers every unit of its origin, those not yet issued included."""
    index = uow.find(RestrictionIndex.id_for(), RestrictionIndex)
    if index is None or not unit_class.project or not index.detains(unit_class.project):
        return
    for detention in detention_lookup(uow, index)(unit_class.project):
        if detention.detains(unit_class):
            check_issuable(unit_class, quantity, detention)


def check_blocks_unrestricted(
    uow: UnitOfWork, source_account: str, kind: TransactionKind, blocks: Sequence[SerialBlock]
) -> None:
    """Refuse moving these exact ``blocks`` out of ``source_account`` when a block freeze
    or a detention covers any of them (a reversal, which moves back the very serials
    the original moved, cannot skip restricted units as FIFO selection does)."""
    index = uow.find(RestrictionIndex.id_for(), RestrictionIndex)
    if index is None:
        return
    detained = index.any_detained and any(b.unit_class.project for b in blocks)
    if not detained and source_account not in index.freezes and not index.halted:
        return
    freezes = [
        f
        for f in (
            uow.find(BlockFreeze.id_for(i), BlockFreeze)
            for i in index.freezes.get(source_account, [])
        )
        if f is not None
    ]
    check_unrestricted(
        blocks,
        source_account=source_account,
        kind=kind,
        block_freezes=freezes,
        detentions=detention_lookup(uow, index),
        halt=uow.find(MarketHalt.id_for(), MarketHalt),
    )

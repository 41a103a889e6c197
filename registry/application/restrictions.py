"""Judicial freezes of serial blocks, detention of a CCER project's units, and the
market halt: imposing and lifting them (each through an approved proposal, see
``four_eyes``), and the check every movement makes before it moves anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.domain import units
from registry.domain.accounts import Account
from registry.domain.block_freezes import BlockFreeze
from registry.domain.errors import UnknownFreeze
from registry.domain.market_halt import MarketHalt
from registry.domain.origin_detentions import OriginDetention
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


class Restrictions:
    """The restriction use cases of one registry; each returns a line saying what it did."""

    def __init__(self, store: Store) -> None:
        self._store = store

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
        self, principal: Principal, project: str, reference: str, reason: str, proposal: str = ""
    ) -> str:
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            detention = uow.find(OriginDetention.id_for(project), OriginDetention) or uow.add(
                OriginDetention.start(project)
            )
            if detention.detain(
                reference=reference,
                reason=reason,
                principal=principal,
                at=store.clock(),
                proposal=proposal,
            ):
                self._index(uow).index_detention(project, True)
                uow.save()
            return f"project {project} detained under {reference}"

        return store.retrying(attempt)

    def clear_origin(
        self, principal: Principal, project: str, evidence: str, reason: str, proposal: str = ""
    ) -> str:
        store = self._store

        def attempt(uow: UnitOfWork) -> str:
            detention = uow.find(
                OriginDetention.id_for(project), OriginDetention
            ) or OriginDetention.start(project)
            if detention.clear(
                evidence=evidence,
                reason=reason,
                principal=principal,
                at=store.clock(),
                proposal=proposal,
            ):
                self._index(uow).index_detention(project, False)
                uow.save()
            return f"project {project} cleared on {evidence}"

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

    def restricted_quantities(self, account_id: str) -> dict[str, tuple[int, int]]:
        """(detained, frozen) units per unit class key of one account, from the write
        model (authoritative, and nothing to read when nothing is in force: the index
        says so in one cached read)."""
        uow = UnitOfWork(self._store.app)
        index = uow.find(RestrictionIndex.id_for(), RestrictionIndex)
        if index is None or (not index.detained and account_id not in index.freezes):
            return {}
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

        def detentions(project: str) -> OriginDetention | None:
            return uow.find(OriginDetention.id_for(project), OriginDetention)

        found = restricted_quantities(
            account.all_blocks,
            account_id=account_id,
            block_freezes=freezes,
            detentions=detentions,
        )
        return {cls.key: quantities for cls, quantities in found.items()}

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
            if detention is None or not (detention.is_active or include_lifted):
                continue
            views.append(self._detention_view(uow, detention))
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

    def _detention_view(self, uow: UnitOfWork, detention: OriginDetention) -> RestrictionView:
        holders = self._holders(uow, detention.project) if detention.is_active else {}
        return RestrictionView(
            kind="ORIGIN_DETENTION",
            restriction_id=detention.project,
            state=detention.status_name,
            accounts=tuple(sorted(holders)),
            origin=f"PROJECT:{detention.project}",
            reference=detention.reference,
            reason=detention.reason,
            principal=detention.detained_by,
            since=detention.detained_at,
            quantity=sum(holders.values()),
        )

    def _holders(self, uow: UnitOfWork, project: str) -> dict[str, int]:
        """Every account holding units of ``project`` (held ones included), with how
        many: the accounts a detention of it touches."""
        ids = list(self._store.originators(Account.Opened.TOPIC))
        uow.prefetch(ids, self._store.load_many)
        found: dict[str, int] = {}
        for account_uuid in ids:
            account = uow.find(account_uuid, Account)
            if account is None:
                continue
            quantity = sum(
                b.quantity for b in account.all_blocks if b.unit_class.project == project
            )
            if quantity:
                found[account.account_id] = quantity
        return found

    @staticmethod
    def _index(uow: UnitOfWork) -> RestrictionIndex:
        return uow.find(RestrictionIndex.id_for(), RestrictionIndex) or uow.add(
            RestrictionIndex.start()
        )


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

    def detentions(project: str) -> OriginDetention | None:
        return uow.find(OriginDetention.id_for(project), OriginDetention)

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
    if index is None or not unit_class.project or unit_class.project not in index.detained:
        return
    detention = uow.find(OriginDetention.id_for(unit_class.project), OriginDetention)
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
    detained = bool(index.detained) and any(b.unit_class.project for b in blocks)
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

    def detentions(project: str) -> OriginDetention | None:
        return uow.find(OriginDetention.id_for(project), OriginDetention)

    check_unrestricted(
        blocks,
        source_account=source_account,
        kind=kind,
        block_freezes=freezes,
        detentions=detentions,
        halt=uow.find(MarketHalt.id_for(), MarketHalt),
    )

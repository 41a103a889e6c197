"""Judicial freezes of serial blocks, detention of a CCER project's units, and the
market halt: imposing and lifting them (each through an approved proposal, see
``four_eyes``), and the check every movement makes before it moves anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.domain import units
from registry.domain.accounts import Account
from registry.domain.block_freezes import BlockFreeze
from registry.domain.errors import UnknownFreeze
from registry.domain.market_halt import MarketHalt
from registry.domain.origin_detentions import OriginDetention
from registry.domain.restriction_guards import check_unrestricted, movable
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.transactions import Principal, TransactionKind
from registry.domain.units import Holding, SerialBlock, UnitSelector


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

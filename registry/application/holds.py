"""Exchange holds: units reserved for an open sell order (available -> held) until the
order settles, is released, or times out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from registry.application.commands import check_quantity, check_reason, fingerprint
from registry.application.perform import RECORDABLE
from registry.application.restrictions import check_restrictions
from registry.application.results import HoldResult
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.accounts import check_account_id
from registry.domain.errors import HoldExistsWithDifferentContent
from registry.domain.holds import Hold, HoldStatus, check_timeout
from registry.domain.ids import check_client_id
from registry.domain.ledger import check_holdable
from registry.domain.transactions import SYSTEM, Principal, TransactionKind
from registry.domain.units import SerialBlock, UnitSelector


class Holds:
    """The hold use cases of one registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def place_hold(
        self,
        principal: Principal,
        hold_id: str,
        account_id: str,
        selector: UnitSelector,
        quantity: int,
        timeout_seconds: int,
    ) -> HoldResult:
        """Reserve units for an open sell order: available -> held, until the timeout."""
        check_client_id(hold_id, "hold id")
        check_account_id(account_id)
        check_quantity(quantity)
        check_timeout(timeout_seconds)
        party = principal.party
        content = {
            "account": account_id,
            "selector": selector.as_dict(),
            "quantity": quantity,
            "timeout_seconds": timeout_seconds,
        }
        record: dict[str, Any] = {
            "party": party,
            "hold_id": hold_id,
            "account_id": account_id,
            "selector": selector,
            "quantity": quantity,
            "timeout_seconds": timeout_seconds,
            "principal": principal,
            "fingerprint": fingerprint(content),
        }

        def attempt(uow: UnitOfWork) -> HoldResult:
            try:
                account = uow.account(account_id)
                check_holdable(account.account_type, account_id)
                # a hold reserves units for exchange settlement: what would stop that
                # settlement (a freeze, a detention, a halt) refuses the hold now
                pool = check_restrictions(
                    uow, account, TransactionKind.SETTLEMENT, selector, quantity
                )
                blocks = account.hold(Hold.id_for(party, hold_id), selector, quantity, pool)
            except RECORDABLE as error:
                uow.verify_current()
                hold = Hold.refuse(error=error, **record)
                return HoldResult.of(hold, position=_position(self._store.save(hold)))
            hold = Hold.place(now=self._store.clock(), **record)
            return HoldResult.of(hold, blocks, position=_position(uow.save(hold)))

        def on_conflict() -> HoldResult | None:
            hold = self._store.find(Hold.id_for(party, hold_id), Hold)
            if hold is None:
                return None
            if hold.fingerprint != record["fingerprint"]:
                raise HoldExistsWithDifferentContent(
                    f"hold {party}:{hold_id} exists with other content", hold=f"{party}:{hold_id}"
                )
            return self._hold_result(hold, replayed=True)

        return self._store.retrying(attempt, on_conflict)

    def release_hold(self, principal: Principal, hold_id: str, reason: str = "") -> HoldResult:
        """Give held units back to available. Releasing a released hold is a no-op replay."""
        check_client_id(hold_id, "hold id")
        check_reason(reason)
        return self._end_hold(
            principal.party,
            hold_id,
            HoldStatus.RELEASED,
            lambda hold: hold.release(principal, reason),
        )

    def expire_hold(self, principal: Principal, party: str, hold_id: str) -> HoldResult:
        """Release a hold whose timeout has passed (refused while it has not)."""
        now = self._store.clock()
        return self._end_hold(
            party, hold_id, HoldStatus.EXPIRED, lambda hold: hold.expire(principal, now)
        )

    def expire_due_holds(self, principal: Principal = SYSTEM) -> list[HoldResult]:
        """Expire every active hold past its timeout (scans the log; a read model will index)."""
        now = self._store.clock()
        expired = []
        for hold_uuid in self._store.originators(Hold.Placed.TOPIC):
            hold = self._store.find(hold_uuid, Hold)
            if hold is not None and hold.is_due(now):
                expired.append(self.expire_hold(principal, hold.party, hold.hold_id))
        return expired

    def _end_hold(
        self, party: str, hold_id: str, final: HoldStatus, end: Callable[[Hold], None]
    ) -> HoldResult:
        def attempt(uow: UnitOfWork) -> HoldResult:
            hold = uow.hold(party, hold_id)
            if hold.status is final:
                return HoldResult.of(hold, replayed=True)
            account = uow.account(hold.account_id)
            end(hold)
            blocks = account.release_hold(hold.id)
            return HoldResult.of(hold, blocks, position=_position(uow.save()))

        return self._store.retrying(attempt)

    def get_hold(self, party: str, hold_id: str) -> HoldResult:
        return self._hold_result(UnitOfWork(self._store.app).hold(party, hold_id))

    def _hold_result(self, hold: Hold, *, replayed: bool = False) -> HoldResult:
        blocks: tuple[SerialBlock, ...] = ()
        if hold.status is HoldStatus.ACTIVE:
            account = self._store.account(hold.account_id)
            blocks = tuple(account.held.get(str(hold.id), ()))
        return HoldResult.of(hold, blocks, replayed=replayed)

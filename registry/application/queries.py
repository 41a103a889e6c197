"""Direct reads of the write model: accounts and their holdings, transactions, where a
serial is, and the conservation of units (issued against held)."""

from __future__ import annotations

from registry.application.results import AccountView, HoldingView, SupplyLine, TransactionResult
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.domain import units
from registry.domain.accounts import Account
from registry.domain.conservation import per_class
from registry.domain.errors import UnknownSerial
from registry.domain.serials import SerialCounter
from registry.domain.units import UnitClass, UnitSelector


class Queries:
    """The direct queries of one registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get_account(self, account_id: str) -> AccountView:
        return AccountView.of(self._store.account(account_id))

    def get_holdings(self, account_id: str) -> list[HoldingView]:
        """Per unit class: total, held by exchange holds, and available."""
        account = self._store.account(account_id)
        available = list(account.available)
        held = list(account.held_blocks)
        classes = sorted({b.unit_class for b in [*available, *held]})
        views = []
        for unit_class in classes:
            selector = UnitSelector(
                unit_class.unit_type, unit_class.vintage, unit_class.project or None
            )
            in_class = [b for b in account.all_blocks if b.unit_class == unit_class]
            held_qty = units.total(held, selector)
            avail_qty = units.total(available, selector)
            views.append(
                HoldingView(unit_class, held_qty + avail_qty, held_qty, avail_qty, tuple(in_class))
            )
        return views

    def get_transaction(self, party: str, transaction_id: str) -> TransactionResult:
        return TransactionResult.of(UnitOfWork(self._store.app).transaction(party, transaction_id))

    def account_ids(self) -> list[str]:
        accounts = (
            self._store.find(i, Account) for i in self._store.originators(Account.Opened.TOPIC)
        )
        return [a.account_id for a in accounts if a is not None]

    def locate_serial(self, unit_class: UnitClass, serial: int) -> tuple[str, bool]:
        """(account holding ``serial`` now, whether it is held by an exchange hold)."""
        counter = self._store.find(SerialCounter.id_for(unit_class), SerialCounter)
        if counter is None or not 0 < serial < counter.next_serial:
            raise UnknownSerial(
                f"serial {serial} of {unit_class} was never issued",
                unit_class=unit_class.key,
                serial=serial,
            )
        for account_id in self.account_ids():
            account = self._store.account(account_id)
            for block in account.all_blocks:
                if block.unit_class == unit_class and block.contains(serial):
                    held = any(
                        b.unit_class == unit_class and b.contains(serial)
                        for b in account.held_blocks
                    )
                    return account_id, held
        raise RuntimeError(f"serial {serial} of {unit_class} is issued but held nowhere")

    def supply(self) -> list[SupplyLine]:
        """Units issued per class against the sum of every account's holding (conservation)."""
        issued: dict[UnitClass, int] = {}
        for counter_id in self._store.originators(SerialCounter.Started.TOPIC):
            counter = self._store.find(counter_id, SerialCounter)
            if counter is not None:
                issued[counter.unit_class] = counter.issued
        held = per_class(
            (block.unit_class, block.quantity)
            for account_id in self.account_ids()
            for block in self._store.account(account_id).all_blocks
        )
        return [
            SupplyLine(c, issued.get(c, 0), held.get(c, 0))
            for c in sorted(issued.keys() | held.keys())
        ]

"""Account use cases: opening accounts (this process's concurrent openings share one
save), the national accounts, and freezing, unfreezing and closing an account."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from registry.application.commands import check_reason
from registry.application.group_commit import MAX_GROUP, GroupCommit
from registry.application.request_ids import current_request_id, stamp
from registry.application.results import AccountResult, AccountView
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.accounts import (
    NATIONAL_ACCOUNTS,
    REGISTRY_AUTHORITY,
    Account,
    AccountState,
    AccountType,
    Holder,
    check_account_id,
)
from registry.domain.errors import AccountExistsWithDifferentContent, RegistryError
from registry.domain.ids import check_client_id
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.transactions import SYSTEM, Principal


@dataclass(frozen=True)
class Opening:
    """One caller's request to open an account, for the openings' group commit."""

    principal: Principal
    account_id: str
    account_type: AccountType
    holder: Holder
    request_id: str | None = field(default_factory=current_request_id)


class Accounts:
    """The account use cases of one registry."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._openings: GroupCommit[Opening, AccountResult] = GroupCommit(
            self._open_group, limit=MAX_GROUP, name="registry-openings"
        )

    def close(self) -> None:
        self._openings.close()

    def open_account(
        self, principal: Principal, account_id: str, account_type: AccountType, holder: Holder
    ) -> AccountResult:
        """Open an account; the same request again is a replay. Saved together with the
        other accounts this process's callers are opening (3,700 accounts opened by 32
        callers one save each took ~10 s of a national year)."""
        Account.open(account_id, account_type, holder, str(principal))  # refuse bad input here
        return self._openings.submit(Opening(principal, account_id, account_type, holder))

    def _open_group(self, openings: Sequence[Opening]) -> list[AccountResult | RegistryError]:
        """Open every new account of the group in one save; an account that exists is a
        replay when the request matches it, else refused, as it would be alone."""

        def attempt(uow: UnitOfWork) -> list[AccountResult | RegistryError]:
            uow.prefetch((Account.id_for(o.account_id) for o in openings), self._store.load_many)
            outcomes: list[Account | AccountResult | RegistryError] = []
            for opening in openings:
                existing = uow.find(Account.id_for(opening.account_id), Account)
                if existing is None:
                    account = Account.open(
                        opening.account_id,
                        opening.account_type,
                        opening.holder,
                        str(opening.principal),
                    )
                    stamp(account.pending_events, opening.request_id)
                    outcomes.append(uow.add(account))
                elif (
                    existing.account_type is opening.account_type
                    and existing.holder == opening.holder.as_dict()
                ):
                    outcomes.append(AccountResult(AccountView.of(existing), replayed=True))
                else:
                    outcomes.append(
                        AccountExistsWithDifferentContent(
                            f"account {opening.account_id} exists with other details",
                            account=opening.account_id,
                        )
                    )
            position = _position(uow.save())
            return [
                AccountResult(AccountView.of(o), position=position) if isinstance(o, Account) else o
                for o in outcomes
            ]

        return self._store.retrying(attempt)

    def ensure_national_accounts(self) -> list[AccountResult]:
        """Open the four national accounts unless they exist, and start the restriction
        index (every movement reads it; a missing aggregate would cost a query each
        time). Safe to call at every start."""
        opened = [
            self.open_account(SYSTEM, account_id, account_type, Holder(REGISTRY_AUTHORITY))
            for account_type, account_id in NATIONAL_ACCOUNTS.items()
        ]

        def start_index(uow: UnitOfWork) -> None:
            if uow.find(RestrictionIndex.id_for(), RestrictionIndex) is None:
                uow.add(RestrictionIndex.start())
                uow.save()

        self._store.retrying(start_index)
        return opened

    def freeze_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        check_reason(reason)
        return self._change_account(
            account_id,
            AccountState.FROZEN,
            request_id,
            lambda a, rid: a.freeze(reason, str(principal), rid),
        )

    def unfreeze_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        check_reason(reason)
        return self._change_account(
            account_id,
            AccountState.OPEN,
            request_id,
            lambda a, rid: a.unfreeze(reason, str(principal), rid),
        )

    def close_account(
        self, principal: Principal, account_id: str, reason: str, *, request_id: str | None = None
    ) -> AccountResult:
        check_reason(reason)
        return self._change_account(
            account_id,
            AccountState.CLOSED,
            request_id,
            lambda a, rid: a.close(reason, str(principal), rid),
        )

    def _change_account(
        self,
        account_id: str,
        target: AccountState,
        request_id: str | None,
        change: Callable[[Account, str], None],
    ) -> AccountResult:
        """Change the account's state; a retry of the last change (same request id) is
        answered with the account as it is, not refused as unchanged."""
        check_account_id(account_id)
        rid = "" if request_id is None else check_client_id(request_id, "request id")

        def attempt(uow: UnitOfWork) -> AccountResult:
            account = uow.account(account_id)
            if account.is_replay(rid, target):
                return AccountResult(AccountView.of(account), replayed=True)
            change(account, rid)
            return AccountResult(AccountView.of(account), position=_position(uow.save()))

        return self._store.retrying(attempt)

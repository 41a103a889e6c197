"""Enforcement use cases after a year closes short (Decree 775, Art. 24): recording the
regulator's fine, and the deduction step once correction deadlines have passed.

Closing (``Compliance.close_compliance_year``) gives each shortfall a notice with a
correction deadline; late surrender until then is the ordinary surrender path
(``registry.application.perform``). Deduction is an explicit regulator's step, not a
side effect of the clock, so that what is deducted, when and by whom is on record.
"""

from __future__ import annotations

from registry.application.commands import check_reason
from registry.application.results import DeductionRun, FineResult
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.accounts import Account, AccountType, check_account_id
from registry.domain.enforcement import Fine
from registry.domain.errors import ComplianceYearOpen, InvalidCommand, NoShortfall
from registry.domain.obligations import MAX_YEAR, ComplianceObligation, check_year
from registry.domain.rules import ComplianceYear
from registry.domain.transactions import Principal


class Enforcement:
    """The enforcement use cases of one registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record_fine(
        self,
        principal: Principal,
        account_id: str,
        year: int,
        multiple: str,
        reference_price: str,
        reason: str,
    ) -> FineResult:
        """Record the fine on (account, year)'s shortfall: ``multiple`` (5..10) x
        ``reference_price`` (CNY/t) x the tonnes short at closing. The same fine again
        is a replay; bad figures are refused before anything is read."""
        check_account_id(account_id)
        check_year(year)
        Fine.of(multiple, reference_price, 0)  # each bad figure named, nothing read
        check_reason(reason)
        self._store.account(account_id)  # UNKNOWN_ACCOUNT

        def attempt(uow: UnitOfWork) -> FineResult:
            obligation = self._closed_obligation(uow, account_id, year)
            recorded = obligation.record_fine(multiple, reference_price, str(principal), reason)
            fine = obligation.fine or {}
            return FineResult(
                account_id,
                year,
                str(fine["multiple"]),
                str(fine["reference_price"]),
                int(fine["quantity"]),
                str(fine["amount"]),
                replayed=not recorded,
                position=_position(uow.save()) if recorded else None,
            )

        return self._store.retrying(attempt)

    def enforce_deductions(self, principal: Principal, year: int, reason: str) -> DeductionRun:
        """The deduction step, all in one save: every obligation of ``year`` whose
        correction deadline has passed uncorrected closes, and what it is still short
        is carried as a debt into the next year (deducted from the next free
        allocation). Obligations still inside their deadline are counted and left;
        running it again deducts nothing twice."""
        check_year(year)
        check_reason(reason)
        today = self._store.clock().date()

        def attempt(uow: UnitOfWork) -> DeductionRun:
            self._ensure_closed(uow, year)
            deducted = tonnes = awaiting = 0
            for obligation in self._obligations(uow, year):
                if not obligation.correcting:
                    continue
                carried = obligation.deduct_shortfall(today, str(principal), reason)
                if not carried:
                    awaiting += 1
                    continue
                deducted += 1
                tonnes += carried
                if year < MAX_YEAR:
                    uow.obligation(obligation.account_id, year + 1).carry_debt(year, carried)
            position = _position(uow.save()) if deducted else None
            return DeductionRun(year, deducted, tonnes, awaiting, position)

        return self._store.retrying(attempt)

    # -- plumbing -------------------------------------------------------------------

    @staticmethod
    def _ensure_closed(uow: UnitOfWork, year: int) -> None:
        compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
        if compliance_year is None or not compliance_year.closed:
            raise ComplianceYearOpen(
                f"compliance year {year} is not closed: enforcement follows the closing",
                year=year,
            )

    def _closed_obligation(
        self, uow: UnitOfWork, account_id: str, year: int
    ) -> ComplianceObligation:
        self._ensure_closed(uow, year)
        account = uow.account(account_id)
        if account.account_type is not AccountType.COMPLIANCE:
            raise InvalidCommand(
                f"{account_id} is a {account.account_type} account: only compliance "
                "accounts have obligations",
                reason="NOT_COMPLIANCE_ACCOUNT",
                field="account_id",
                account=account_id,
            )
        obligation = uow.find(ComplianceObligation.id_for(account_id, year), ComplianceObligation)
        if obligation is None:
            raise NoShortfall(
                f"{account_id} had no obligation in {year}: nothing to fine",
                account=account_id,
                year=year,
            )
        return obligation

    def _obligations(self, uow: UnitOfWork, year: int) -> list[ComplianceObligation]:
        """The year's obligations of every compliance account (and the next year's,
        which a deduction writes), loaded in a few queries."""
        ids = list(self._store.originators(Account.Opened.TOPIC))
        uow.prefetch(ids, self._store.load_many)
        accounts = [
            a.account_id
            for a in (uow.find(i, Account) for i in ids)
            if a is not None and a.account_type is AccountType.COMPLIANCE
        ]
        uow.prefetch(
            (ComplianceObligation.id_for(a, y) for a in accounts for y in (year, year + 1)),
            self._store.load_many,
        )
        found = (
            uow.find(ComplianceObligation.id_for(a, year), ComplianceObligation) for a in accounts
        )
        return [o for o in found if o is not None]

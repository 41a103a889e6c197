"""Compliance use cases: verified emissions, the year's surrender rules, closing a year
at the deadline, and where an account (or every account) stands."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID

from registry.application.commands import EmissionsRow, check_batch, check_emissions, check_reason
from registry.application.results import (
    ComplianceReportLine,
    ComplianceRulesView,
    ComplianceState,
    ComplianceView,
    EmissionsRecorded,
    EmissionsRowResult,
    EmissionsRowStatus,
    YearClosing,
)
from registry.application.store import AccountOpening, Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.accounts import Account, AccountType, Sector, check_account_id
from registry.domain.carry_over import (
    CarryOverUse,
    carried_tonnes,
    net_sales,
    past_carried_surrenders,
)
from registry.domain.enforcement import check_correction_days, correction_deadline
from registry.domain.errors import InvalidCommand, RowsInvalid, UnknownAccount, Violation
from registry.domain.obligations import MAX_YEAR, MIN_YEAR, ComplianceObligation, check_year
from registry.domain.rules import (
    DEFAULT_RULES,
    ComplianceRules,
    ComplianceYear,
    check_rule_key,
    unit_line_violations,
)
from registry.domain.transactions import Principal
from registry.domain.units import Holding
from registry.persistence.account_history import account_transactions


def year_rules(uow: UnitOfWork, year: int, account: Account) -> tuple[ComplianceRules, bool]:
    """The year's rules for the account's sector, and whether the year is closed."""
    compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
    if compliance_year is None:
        return DEFAULT_RULES, False
    return compliance_year.rules_for(account.holder.get("sector", "")), compliance_year.closed


@dataclass
class CarryOverCheck:
    """What one surrender's carry-over judgment needs under a NET_SALES rule, read only
    when the surrender takes carried vintages: the account's net sales over the rule's
    period and the carried tonnes it already surrendered from the same pool, and,
    once it passes, how to record what it took."""

    net_sales: int | None = None
    used: int = 0
    scope: str | None = None
    carried: int = 0
    use: CarryOverUse | None = None
    history: list[tuple[UUID, int, str, int]] = field(default_factory=list)
    """Surrenders made before carried tonnes were recorded, to record with the first."""

    @classmethod
    def of(
        cls, uow: UnitOfWork, rules: ComplianceRules, account: Account, year: int, blocks: Holding
    ) -> CarryOverCheck:
        """Read the figures when the year's rule draws on a pool and the blocks hold
        carried vintages; else nothing is read (and a NONE rule is judged without)."""
        scope = rules.carry_over_scope
        if scope is None:
            return cls()
        window = rules.net_sales_window()
        carried = carried_tonnes(rules, year, blocks)
        if window is None or not carried:
            return cls()
        # The account's history up to the version this decision read: the save that
        # debits the account is version-checked, so a settlement committed meanwhile
        # makes it retry with a fresh read, never decide on a figure that was not so.
        stored = account.version - len(account.pending_events)
        transactions = account_transactions(uow.app, account.account_id, stored)
        sales = net_sales(account.account_id, transactions, *window)
        use = uow.find(CarryOverUse.id_for(account.account_id), CarryOverUse)
        if use is not None:
            return cls(sales, use.used(scope), scope, carried, use)
        years = {t.compliance_year for t in transactions if t.compliance_year is not None}
        history = past_carried_surrenders(
            account.account_id,
            transactions,
            {y: year_rules(uow, y, account)[0] for y in years if MIN_YEAR <= y <= MAX_YEAR},
        )
        used = sum(tonnes for _, _, pool, tonnes in history if pool == scope)
        return cls(sales, used, scope, carried, None, history)

    def record(self, uow: UnitOfWork, account_id: str, transaction_id: UUID, year: int) -> None:
        """Count the surrender's carried tonnes against its pool (after every guard
        passed): the first record of an account also records its earlier surrenders."""
        if self.scope is None:
            return
        use = self.use or uow.find(CarryOverUse.id_for(account_id), CarryOverUse)
        if use is None:
            use = uow.add(CarryOverUse.start(account_id))
            for txn_id, past_year, pool, tonnes in self.history:
                use.record(txn_id, past_year, pool, tonnes, from_history=True)
        use.record(transaction_id, year, self.scope, self.carried)


def carry_over_give_back(
    uow: UnitOfWork, account_id: str, surrender_id: UUID
) -> Callable[[UUID], None] | None:
    """The step that gives a reversed surrender's carried tonnes back to their pool;
    None when the account has recorded none."""
    use = uow.find(CarryOverUse.id_for(account_id), CarryOverUse)
    if use is None:
        return None

    def give_back(reversal_id: UUID) -> None:
        use.give_back(surrender_id, reversal_id)

    return give_back


class Compliance:
    """The compliance use cases of one registry. ``provinces_of`` tells the jurisdiction
    a regulator acts in (its provinces; none if national), recorded with what it verifies."""

    def __init__(
        self, store: Store, provinces_of: Callable[[Principal], Sequence[str]] = lambda _: ()
    ) -> None:
        self._store = store
        self._provinces_of = provinces_of

    def record_verified_emissions(
        self, principal: Principal, rows: Sequence[EmissionsRow]
    ) -> EmissionsRecorded:
        """Record verified emissions for many (account, year), all in one save or none.

        Every row is checked first and every bad row named (RowsInvalid), because a
        half-loaded table is worse than none. The same figure again is UNCHANGED.
        """
        self._check_emissions_rows(rows)
        store = self._store
        provinces = tuple(self._provinces_of(principal))

        def attempt(uow: UnitOfWork) -> EmissionsRecorded:
            for year in sorted({row.compliance_year for row in rows}):
                compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
                if compliance_year is not None:
                    compliance_year.ensure_open()  # a closed year's figures are fixed
            uow.prefetch(
                (ComplianceObligation.id_for(row.account_id, row.compliance_year) for row in rows),
                store.load_many,
            )
            results = []
            for row in rows:
                obligation = uow.obligation(row.account_id, row.compliance_year)
                recorded = obligation.record_emissions(
                    row.verified_emissions,
                    row.reason,
                    str(principal),
                    provinces,
                    lines=row.unit_lines,
                )
                results.append(
                    EmissionsRowResult(
                        row.account_id,
                        row.compliance_year,
                        EmissionsRowStatus.RECORDED if recorded else EmissionsRowStatus.UNCHANGED,
                    )
                )
            return EmissionsRecorded(tuple(results), _position(uow.save()))

        return store.retrying(attempt)

    def _check_emissions_rows(self, rows: Sequence[EmissionsRow]) -> None:
        check_batch(len(rows), 0, "rows", "emissions rows given")
        accounts = self._store.account_openings(  # an account's type and holder are fixed
            row.account_id for row in rows if isinstance(row.account_id, str)
        )
        seen: dict[tuple[str, int], int] = {}
        violations: list[Violation] = []
        for index, row in enumerate(rows):
            violations += _emissions_row_violations(accounts, f"rows[{index}]", row)
            first = seen.setdefault((row.account_id, row.compliance_year), index)
            if first != index:
                violations.append(
                    Violation(
                        f"rows[{index}].account_id",
                        "DUPLICATE_ROW",
                        f"rows[{first}] already gives {row.account_id} {row.compliance_year}",
                    )
                )
        if violations:
            bad = len({v.field.split(".")[0] for v in violations})
            raise RowsInvalid(
                f"{bad} of {len(rows)} emissions rows are invalid; nothing was recorded",
                violations=violations,
            )

    def get_compliance_status(self, account_id: str, year: int) -> ComplianceView:
        """Where (account, year) stands, judged by the year's rules for its sector."""
        check_account_id(account_id)
        account = self._store.account(account_id)
        check_year(year)
        if account.account_type is not AccountType.COMPLIANCE:
            raise InvalidCommand(
                f"{account_id} is a {account.account_type} account: only compliance "
                "accounts have obligations",
                reason="NOT_COMPLIANCE_ACCOUNT",
                field="account_id",
                account=account_id,
            )
        uow = UnitOfWork(self._store.app)
        obligation = uow.find(ComplianceObligation.id_for(account_id, year), ComplianceObligation)
        rules, closed = year_rules(uow, year, account)
        return ComplianceView.of(
            account_id, year, obligation, rules, closed, self._store.clock().date()
        )

    def set_compliance_rules(
        self, principal: Principal, year: int, sector: str, rules: ComplianceRules, reason: str
    ) -> ComplianceRulesView:
        """Set the rules one sector (or, ``*``, every sector without its own) surrenders
        under for ``year``; the same rules again change nothing. Refused once the year
        is closed."""
        check_year(year)
        check_rule_key(sector)
        rules.check(year)
        check_reason(reason)

        def attempt(uow: UnitOfWork) -> ComplianceRulesView:
            compliance_year = uow.compliance_year(year)
            changed = compliance_year.change_rules(sector, rules, str(principal), reason)
            position = _position(uow.save()) if changed else None
            return ComplianceRulesView.of(compliance_year, year, position)

        return self._store.retrying(attempt)

    def get_compliance_rules(self, year: int) -> ComplianceRulesView:
        check_year(year)
        return ComplianceRulesView.of(
            self._store.find(ComplianceYear.id_for(year), ComplianceYear), year
        )

    def close_compliance_year(
        self, principal: Principal, year: int, reason: str, correction_days: int | None = None
    ) -> YearClosing:
        """Deadline processing, all in one save: every obligation of the year is closed
        with its shortfall fixed, and the year's rules are frozen. A shortfall is not
        deducted at once: the company is ordered to correct it within
        ``correction_days`` (Decree 775, Art. 24; ``registry.application.enforcement``
        takes the later steps). Closing a closed year again answers what the closing
        fixed."""
        check_year(year)
        check_reason(reason)
        days = check_correction_days(correction_days)
        deadline = correction_deadline(self._store.clock().date(), days)

        def attempt(uow: UnitOfWork) -> YearClosing:
            compliance_year = uow.compliance_year(year)
            accounts, obligations = self._compliance_accounts(uow, year)
            if compliance_year.closed:
                short = [o.shortfall for o in obligations.values() if o.shortfall]
                deadlines = {o.correction_deadline for o in obligations.values()} - {""}
                return YearClosing(
                    year,
                    sum(1 for o in obligations.values() if o.closed or o.shortfall),
                    len(short),
                    sum(short),
                    replayed=True,
                    correction_deadline=max(deadlines, default=""),
                )
            closed = shortfalls = tonnes = 0
            for account in accounts:
                obligation = obligations.get(account.account_id)
                if obligation is None or obligation.closed:
                    continue
                shortfall = obligation.close(
                    compliance_year.rules_for(account.holder.get("sector", "")),
                    str(principal),
                    deadline,
                )
                closed += 1
                if shortfall:
                    shortfalls += 1
                    tonnes += shortfall
            compliance_year.close(str(principal), reason)
            return YearClosing(
                year,
                closed,
                shortfalls,
                tonnes,
                position=_position(uow.save()),
                correction_deadline=deadline.isoformat() if shortfalls else "",
            )

        return self._store.retrying(attempt)

    def compliance_report(self, year: int) -> list[ComplianceReportLine]:
        """Compliance accounts by sector, province and status for ``year``, with the
        tonnes verified, owed, surrendered (by unit type) and short."""
        check_year(year)
        uow = UnitOfWork(self._store.app, optimistic=True)
        compliance_year = uow.find(ComplianceYear.id_for(year), ComplianceYear)
        accounts, obligations = self._compliance_accounts(uow, year)
        lines: dict[tuple[str, str, ComplianceState], ComplianceReportLine] = {}
        for account in accounts:
            sector = account.holder.get("sector", "")
            rules = compliance_year.rules_for(sector) if compliance_year else DEFAULT_RULES
            view = ComplianceView.of(
                account.account_id,
                year,
                obligations.get(account.account_id),
                rules,
                compliance_year is not None and compliance_year.closed,
            )
            key = (sector, account.holder.get("province", ""), view.state)
            line = lines.get(key) or ComplianceReportLine(*key)
            lines[key] = replace(
                line,
                accounts=line.accounts + 1,
                verified_emissions=line.verified_emissions + (view.verified_emissions or 0),
                obligation=line.obligation + view.obligation,
                surrendered_cea=line.surrendered_cea + view.surrendered_cea,
                surrendered_ccer=line.surrendered_ccer + view.surrendered_ccer,
                shortfall=line.shortfall + view.shortfall,
            )
        return [lines[key] for key in sorted(lines)]

    def _compliance_accounts(
        self, uow: UnitOfWork, year: int
    ) -> tuple[list[Account], dict[str, ComplianceObligation]]:
        """Every compliance account, and the obligations of ``year`` that exist, loaded
        in a few queries."""
        ids = list(self._store.originators(Account.Opened.TOPIC))
        uow.prefetch(ids, self._store.load_many)
        accounts = [
            a
            for a in (uow.find(i, Account) for i in ids)
            if a is not None and a.account_type is AccountType.COMPLIANCE
        ]
        uow.prefetch(
            (
                ComplianceObligation.id_for(a.account_id, y)
                for a in accounts
                for y in (year, year + 1)
            ),
            self._store.load_many,
        )
        found = {
            a.account_id: uow.find(
                ComplianceObligation.id_for(a.account_id, year), ComplianceObligation
            )
            for a in accounts
        }
        return accounts, {k: v for k, v in found.items() if v is not None}

    def get_surrendered(self, account_id: str, year: int) -> dict[str, int]:
        """Units surrendered against (account, compliance year), by unit type."""
        check_year(year)
        obligation = self._store.find(
            ComplianceObligation.id_for(account_id, year), ComplianceObligation
        )
        return dict(obligation.surrendered) if obligation else {}


def _emissions_row_violations(
    accounts: Mapping[str, AccountOpening], name: str, row: EmissionsRow
) -> list[Violation]:
    """Every problem of one emissions row, each named by its field (``accounts``: what
    opening fixed of the rows' accounts that exist)."""
    checks: list[tuple[str, Callable[[Any], object], Any]] = [
        ("account_id", check_account_id, row.account_id),
        ("compliance_year", check_year, row.compliance_year),
        ("verified_emissions", check_emissions, row.verified_emissions),
        ("reason", check_reason, row.reason),
    ]
    violations = []
    for column, check, value in checks:
        try:
            check(value)
        except InvalidCommand as error:
            violations.append(Violation(f"{name}.{column}", error.reason, error.message))
    if any(v.field == f"{name}.account_id" for v in violations):
        return violations  # a malformed id names no account to look up
    account = accounts.get(row.account_id)
    if account is None:
        violations.append(
            Violation(f"{name}.account_id", UnknownAccount.reason, f"no account {row.account_id}")
        )
    elif account.account_type is not AccountType.COMPLIANCE:
        violations.append(
            Violation(
                f"{name}.account_id",
                "NOT_COMPLIANCE_ACCOUNT",
                f"{row.account_id} is a {account.account_type} account; verified emissions "
                f"belong to COMPLIANCE accounts",
            )
        )
    elif row.unit_lines and account.holder.get("sector") != Sector.POWER.value:
        violations.append(
            Violation(
                f"{name}.unit_lines",
                "UNIT_LINES_NOT_POWER",
                f"{row.account_id} is in {account.holder.get('sector') or 'no sector'}; unit "
                "lines (power unit categories) belong to POWER accounts",
            )
        )
    if isinstance(row.verified_emissions, int):
        violations += unit_line_violations(
            row.verified_emissions, row.unit_lines, f"{name}.unit_lines"
        )
    return violations

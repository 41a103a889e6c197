"""The ledger's rules: which kind moves units between which account types, which
accounts may hold units, and how allocations and returns count towards a year."""

import pytest

from registry.domain.accounts import AccountType
from registry.domain.errors import MovementNotAllowed, UnitsRetired
from registry.domain.ledger import (
    HOLDERS,
    allowances_by_vintage,
    check_account_types,
    check_holdable,
    counts_towards_year,
    return_carries_debt,
    return_covered,
)
from registry.domain.obligations import MAX_YEAR, MIN_YEAR
from registry.domain.transactions import TransactionKind
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

K = TransactionKind
T = AccountType
CEA = UnitType.CEA
CCER = UnitType.CCER


@pytest.mark.parametrize(
    ("kind", "source", "destination"),
    [
        (K.ALLOCATION, T.ALLOCATION_RESERVE, T.COMPLIANCE),
        (K.ALLOCATION_RETURN, T.COMPLIANCE, T.ALLOCATION_RESERVE),
        (K.TRANSFER, T.ISSUANCE, T.PROJECT),
        (K.SETTLEMENT, T.TRADING, T.COMPLIANCE),
        (K.SURRENDER, T.COMPLIANCE, T.SURRENDER),
        (K.CANCELLATION, T.TRADING, T.CANCELLATION),
    ],
)
def test_allowed_movements(
    kind: TransactionKind, source: AccountType, destination: AccountType
) -> None:
    check_account_types(kind, source, destination)


@pytest.mark.parametrize(
    ("kind", "source", "destination"),
    [
        (K.ALLOCATION, T.TRADING, T.COMPLIANCE),
        (K.ALLOCATION, T.ALLOCATION_RESERVE, T.TRADING),
        (K.SURRENDER, T.TRADING, T.SURRENDER),
        (K.SETTLEMENT, T.ISSUANCE, T.TRADING),
        (K.TRANSFER, T.TRADING, T.SURRENDER),
    ],
)
def test_refused_movements(
    kind: TransactionKind, source: AccountType, destination: AccountType
) -> None:
    with pytest.raises(MovementNotAllowed):
        check_account_types(kind, source, destination)


@pytest.mark.parametrize("retired", [T.SURRENDER, T.CANCELLATION])
def test_retired_units_never_move_except_by_reversal(retired: AccountType) -> None:
    for kind in (K.TRANSFER, K.SETTLEMENT, K.CANCELLATION):
        with pytest.raises(UnitsRetired):
            check_account_types(kind, retired, T.TRADING)


@pytest.mark.parametrize("account_type", sorted(HOLDERS))
def test_holders_accounts_may_hold(account_type: AccountType) -> None:
    check_holdable(account_type, "X-0001")


@pytest.mark.parametrize("account_type", sorted(set(AccountType) - HOLDERS))
def test_national_accounts_may_not_hold(account_type: AccountType) -> None:
    with pytest.raises(MovementNotAllowed) as raised:
        check_holdable(account_type, "CN-0001")
    assert raised.value.message == f"units in a {account_type} account cannot be held"
    assert raised.value.metadata == {"account": "CN-0001"}


def test_only_allowances_of_an_obligation_year_count_towards_it() -> None:
    assert counts_towards_year(UnitSelector(CEA), MIN_YEAR)
    assert counts_towards_year(UnitSelector(CEA, MAX_YEAR), MAX_YEAR)
    assert not counts_towards_year(UnitSelector(CEA), MAX_YEAR + 1)
    assert not counts_towards_year(UnitSelector(CEA), MIN_YEAR - 1)
    assert not counts_towards_year(UnitSelector(CCER), 2025)


def test_a_return_carries_debt_only_for_allowances_of_a_year_with_a_next() -> None:
    assert return_carries_debt(UnitSelector(CEA, 2025))
    assert not return_carries_debt(UnitSelector(CEA))  # no vintage: no year
    assert not return_carries_debt(UnitSelector(CEA, MAX_YEAR))  # no next year
    assert not return_carries_debt(UnitSelector(CCER, 2025))


def test_a_return_moves_what_the_account_holds_and_carries_the_rest() -> None:
    holding = [SerialBlock(UnitClass(CEA, 2025), 1, 300), SerialBlock(UnitClass(CEA, 2024), 1, 50)]
    assert return_covered(UnitSelector(CEA, 2025), 500, holding) == 300
    assert return_covered(UnitSelector(CEA, 2025), 200, holding) == 200
    assert return_covered(UnitSelector(CCER, 2025), 500, holding) == 500, "all, or refused"


def test_allowances_by_vintage_ignore_offsets() -> None:
    blocks = [
        SerialBlock(UnitClass(CEA, 2025), 1, 100),
        SerialBlock(UnitClass(CEA, 2026), 1, 20),
        SerialBlock(UnitClass(CEA, 2025), 200, 204),
        SerialBlock(UnitClass(CCER, 2024, "P-0001"), 1, 7),
    ]
    assert allowances_by_vintage(blocks) == {2025: 105, 2026: 20}
    assert allowances_by_vintage([]) == {}

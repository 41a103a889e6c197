"""Account aggregate guards and events. No I/O."""

from uuid import uuid4

import pytest

from registry.domain.accounts import Account, AccountState, AccountType, Holder
from registry.domain.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    AccountStateUnchanged,
    InsufficientUnits,
    InvalidCommand,
    NationalAccountProtected,
)
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

CEA = UnitClass(UnitType.CEA, 2025)
ANY_CEA = UnitSelector(UnitType.CEA)


def company(account_id: str = "PWR-0001") -> Account:
    return Account.open(
        account_id,
        AccountType.COMPLIANCE,
        Holder("Plant Co.", "91110000100001234X", "POWER", "Beijing"),
        "mee/li",
    )


def funded(quantity: int = 100) -> Account:
    account = company()
    account.credit(uuid4(), [SerialBlock(CEA, 1, quantity)])
    return account


def test_open_validates_holder_details() -> None:
    with pytest.raises(InvalidCommand) as raised:
        Account.open(
            "PWR-0001", AccountType.COMPLIANCE, Holder("Plant", "bad", "POWER", "Beijing"), "mee/li"
        )
    assert raised.value.reason == "INVALID_CREDIT_CODE"
    with pytest.raises(InvalidCommand) as raised:
        Account.open(
            "PWR-0001",
            AccountType.COMPLIANCE,
            Holder("Plant", "91110000100001234X", "SHIPPING", "Beijing"),
            "mee/li",
        )
    assert raised.value.reason == "INVALID_SECTOR"
    with pytest.raises(InvalidCommand) as raised:
        Account.open("bad id", AccountType.TRADING, Holder("x"), "mee/li")
    assert raised.value.reason == "INVALID_ACCOUNT_ID"


def test_national_accounts_have_fixed_ids() -> None:
    with pytest.raises(InvalidCommand) as raised:
        Account.open("MY-ISSUANCE", AccountType.ISSUANCE, Holder("x"), "mee/li")
    assert raised.value.reason == "NATIONAL_ACCOUNT_ID"
    issuance = Account.open("CN-ISSUANCE", AccountType.ISSUANCE, Holder("x"), "mee/li")
    assert issuance.id == Account.id_for("CN-ISSUANCE")
    with pytest.raises(NationalAccountProtected):
        issuance.close("no", "mee/li")


def test_debit_takes_fifo_and_records_blocks() -> None:
    account = funded(100)
    taken = account.debit(uuid4(), ANY_CEA, 30)
    assert taken == (SerialBlock(CEA, 1, 30),)
    assert list(account.available) == [SerialBlock(CEA, 31, 100)]
    assert type(account.pending_events[-1]) is Account.Debited


def test_frozen_account_receives_but_cannot_send() -> None:
    account = funded()
    account.freeze("court order", "mee/li")
    assert account.state is AccountState.FROZEN
    account.credit(uuid4(), [SerialBlock(CEA, 101, 110)])
    with pytest.raises(AccountFrozen):
        account.debit(uuid4(), ANY_CEA, 1)
    with pytest.raises(AccountFrozen):
        account.hold(uuid4(), ANY_CEA, 1)
    with pytest.raises(AccountStateUnchanged):
        account.freeze("again", "mee/li")
    account.unfreeze("lifted", "mee/li")
    assert len(account.debit(uuid4(), ANY_CEA, 110)) == 1


def test_close_needs_an_empty_account_and_then_refuses_everything() -> None:
    account = funded(5)
    with pytest.raises(AccountNotEmpty):
        account.close("done", "mee/li")
    account.debit(uuid4(), ANY_CEA, 5)
    account.close("done", "mee/li")
    with pytest.raises(AccountClosed):
        account.credit(uuid4(), [SerialBlock(CEA, 1, 1)])


def test_held_units_cannot_move_and_come_back_on_release() -> None:
    account = funded(100)
    hold_id = uuid4()
    assert account.hold(hold_id, ANY_CEA, 60) == (SerialBlock(CEA, 1, 60),)
    with pytest.raises(InsufficientUnits) as raised:
        account.debit(uuid4(), ANY_CEA, 41)
    assert raised.value.metadata["held"] == "60"
    account.release_hold(hold_id)
    assert list(account.available) == [SerialBlock(CEA, 1, 100)]
    assert account.held == {}


def test_settling_a_hold_in_part_releases_the_rest() -> None:
    account = funded(100)
    hold_id = uuid4()
    account.hold(hold_id, ANY_CEA, 60)
    taken = account.debit_hold(hold_id, uuid4(), 25)
    assert taken == (SerialBlock(CEA, 1, 25),)
    assert list(account.available) == [SerialBlock(CEA, 26, 100)]
    assert account.held == {}


def test_replaying_events_rebuilds_the_same_state() -> None:
    account = funded(100)
    hold_id = uuid4()
    account.hold(hold_id, ANY_CEA, 10)
    account.debit(uuid4(), ANY_CEA, 20)
    copy = None
    for event in account.collect_events():
        copy = event.mutate(copy)
    assert copy is not None
    assert copy.available == account.available and copy.held == account.held
    assert copy.version == account.version


def test_a_copy_from_the_cache_changes_independently_of_the_original() -> None:
    """The aggregate cache hands out copies; Account copies shallowly (events replace
    attributes, never mutate them), so changing a copy must leave the original as is."""
    from copy import deepcopy

    original = funded(100)
    original.collect_events()
    hold = uuid4()
    clone = deepcopy(original)
    clone.hold(hold, ANY_CEA, 30)
    clone.debit(uuid4(), ANY_CEA, 50)
    clone.freeze("court order", "mee/li", "FRZ-1")
    assert len(clone.collect_events()) == 3 and original.collect_events() == []
    assert original.available == (SerialBlock(CEA, 1, 100),) and original.held == {}
    assert original.state is AccountState.OPEN and original.state_requests == {}
    assert original.version + 3 == clone.version
    assert clone.held == {str(hold): (SerialBlock(CEA, 1, 30),)}
    assert clone.available == (SerialBlock(CEA, 81, 100),)

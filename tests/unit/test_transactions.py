"""Transaction rules, holds, counters and commands. No I/O."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from registry.application.commands import Movement, Trade
from registry.domain.accounts import AccountType
from registry.domain.errors import (
    AlreadyReversed,
    HoldExpired,
    HoldMismatch,
    HoldNotActive,
    HoldNotExpired,
    InvalidCommand,
    NotReversible,
    error_for_reason,
)
from registry.domain.holds import Hold, HoldStatus, check_timeout
from registry.domain.serials import SerialCounter
from registry.domain.transactions import (
    Principal,
    Transaction,
    TransactionKind,
    TransactionStatus,
)
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

K = TransactionKind
T = AccountType
CEA = UnitClass(UnitType.CEA, 2025)
WHO = Principal("exchange", "bot")


def completed(kind: TransactionKind = K.SETTLEMENT) -> Transaction:
    return Transaction.complete(
        party="exchange",
        client_id="T1",
        kind=kind,
        source="A-001",
        destination="B-001",
        blocks=[SerialBlock(CEA, 1, 10)],
        reason="",
        principal=WHO,
        fingerprint="f",
        details={},
    )


def test_transaction_id_is_scoped_by_party() -> None:
    assert Transaction.id_for("exchange", "T1") == completed().id
    assert Transaction.id_for("other", "T1") != Transaction.id_for("exchange", "T1")


def test_reversal_guards() -> None:
    txn = completed()
    txn.mark_reversed(uuid4())
    with pytest.raises(AlreadyReversed):
        txn.mark_reversed(uuid4())
    with pytest.raises(NotReversible):
        completed(K.ISSUANCE).ensure_reversible()
    refused = Transaction.refuse(
        party="exchange",
        client_id="T2",
        kind=K.SETTLEMENT,
        source="A-001",
        destination="B-001",
        reason="",
        principal=WHO,
        fingerprint="f",
        details={},
        error=error_for_reason("INSUFFICIENT_UNITS", "no"),
    )
    assert refused.status is TransactionStatus.REFUSED
    with pytest.raises(NotReversible):
        refused.ensure_reversible()


def test_recorded_refusal_rebuilds_the_same_error_type() -> None:
    error = error_for_reason("HOLD_EXPIRED", "late", hold="x")
    assert isinstance(error, HoldExpired)
    assert error.metadata == {"hold": "x"}


def new_hold(now: datetime) -> Hold:
    return Hold.place(
        party="exchange",
        hold_id="H1",
        account_id="A-001",
        selector=UnitSelector(UnitType.CEA, 2025),
        quantity=50,
        timeout_seconds=60,
        now=now,
        principal=WHO,
        fingerprint="f",
    )


def test_hold_lifecycle() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    hold = new_hold(now)
    hold.ensure_matches("A-001", UnitSelector(UnitType.CEA), 50)
    with pytest.raises(HoldMismatch):
        hold.ensure_matches("B-001", UnitSelector(UnitType.CEA), 10)
    with pytest.raises(HoldMismatch):
        hold.ensure_matches("A-001", UnitSelector(UnitType.CEA), 51)
    with pytest.raises(HoldMismatch):
        hold.ensure_matches("A-001", UnitSelector(UnitType.CEA, 2024), 10)
    with pytest.raises(HoldNotExpired):
        hold.expire(WHO, now + timedelta(seconds=59))
    with pytest.raises(HoldExpired):
        hold.settle(uuid4(), 10, now + timedelta(seconds=60))
    hold.settle(uuid4(), 10, now)
    assert hold.status is HoldStatus.SETTLED and hold.settled_quantity == 10
    with pytest.raises(HoldNotActive):
        hold.release(WHO, "")


def test_serial_counter_never_reuses_serials() -> None:
    counter = SerialCounter.start(CEA)
    assert counter.issue(100, uuid4()) == SerialBlock(CEA, 1, 100)
    assert counter.issue(5, uuid4()) == SerialBlock(CEA, 101, 105)
    assert counter.issued == 105


@pytest.mark.parametrize(
    ("trade", "reason"),
    [
        (Trade("T1", "A-001", "B-001", "CEA", 0), "QUANTITY_NOT_POSITIVE"),
        (Trade("T1", "A-001", "B-001", "CEA", -5), "QUANTITY_NOT_POSITIVE"),
        (Trade("T1", "A-001", "B-001", "GOLD", 5), "UNKNOWN_UNIT_TYPE"),
        (Trade("", "A-001", "B-001", "CEA", 5), "MISSING_ID"),
        (Trade("T 1", "A-001", "B-001", "CEA", 5), "INVALID_ID"),
        (Trade("T1", "A-001", "A-001", "CEA", 5), "SAME_ACCOUNT"),
        (Trade("T1", "a", "B-001", "CEA", 5), "INVALID_ACCOUNT_ID"),
        (Trade("T1", "A-001", "B-001", "CEA", 5, vintage=1900), "INVALID_VINTAGE"),
    ],
)
def test_malformed_trades_are_rejected_before_anything_is_stored(trade: Trade, reason: str) -> None:
    with pytest.raises(InvalidCommand) as raised:
        trade.movement()
    assert raised.value.reason == reason


def test_fingerprint_covers_content_but_not_the_sender() -> None:
    one = Trade("T1", "A-001", "B-001", "CEA", 5).movement()
    assert one.fingerprint == Trade("T1", "A-001", "B-001", "CEA", 5).movement().fingerprint
    assert one.fingerprint != Trade("T1", "A-001", "B-001", "CEA", 6).movement().fingerprint
    surrender = Movement(
        "S1",
        K.SURRENDER,
        "A-001",
        "CN-SURRENDER",
        5,
        selector=UnitSelector(UnitType.CEA),
        compliance_year=2025,
    )
    assert surrender.details()["compliance_year"] == 2025
    with pytest.raises(InvalidCommand) as raised:
        Movement("S1", K.SURRENDER, "A-001", "CN-SURRENDER", 5, selector=UnitSelector(UnitType.CEA))
    assert raised.value.reason == "INVALID_COMPLIANCE_YEAR"


def test_a_principal_needs_a_well_formed_party() -> None:
    assert str(Principal("shanghai-exchange", "desk-1")) == "shanghai-exchange/desk-1"
    for bad in ("", "Upper", "has space", "x" * 65):
        with pytest.raises(InvalidCommand) as raised:
            Principal(bad, "desk")
        assert raised.value.reason == "INVALID_PARTY"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"kind": K.ISSUANCE, "source": None, "destination": "CN-ISSUANCE", "quantity": 5},
            "MISSING_UNIT_CLASS",
        ),
        (
            {
                "kind": K.TRANSFER,
                "source": None,
                "destination": "TRD-0001",
                "quantity": 5,
                "selector": UnitSelector(UnitType.CEA),
            },
            "MISSING_ACCOUNT",
        ),
        (
            {"kind": K.TRANSFER, "source": "PWR-0001", "destination": "TRD-0001", "quantity": 5},
            "MISSING_UNITS",
        ),
    ],
)
def test_a_movement_names_what_it_lacks(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidCommand) as raised:
        Movement(client_id="M-1", **fields)  # type: ignore[arg-type]
    assert raised.value.reason == reason


@pytest.mark.parametrize("seconds", [0, -1, 10**9])
def test_a_hold_timeout_out_of_range_is_refused(seconds: int) -> None:
    with pytest.raises(InvalidCommand) as raised:
        check_timeout(seconds)
    assert raised.value.reason == "INVALID_TIMEOUT"

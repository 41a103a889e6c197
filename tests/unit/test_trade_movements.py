"""The lean settlement path makes what the full one makes.

``TradeMovements`` builds a trade's movement without ``Movement.__post_init__``; the
movement, and above all its fingerprint (compared with stored records on every retry),
must be exactly ``Trade.movement``'s, and a malformed trade must fail as it did.
``Transaction.completed_record`` and ``refused_record`` make the event ``complete`` and
``refuse`` made, without the aggregate.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.application.commands import Trade
from registry.application.movements import TradeMovements
from registry.application.results import TransactionResult
from registry.domain.accounts import Account, AccountType, Holder
from registry.domain.errors import InsufficientUnits, InvalidCommand
from registry.domain.transactions import Principal, Transaction, TransactionKind
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
accounts = st.from_regex(r"[A-Z0-9][A-Z0-9-]{2,12}", fullmatch=True)


def same(trade: Trade) -> None:
    """The lean movement equals the full one, fingerprint included (or both fail alike)."""
    try:
        expected = trade.movement()
    except InvalidCommand as error:
        with pytest.raises(InvalidCommand) as raised:
            TradeMovements().movement(trade)
        assert (raised.value.reason, raised.value.message) == (error.reason, error.message)
        return
    built = TradeMovements().movement(trade)
    assert built == expected
    assert built.fingerprint == expected.fingerprint
    assert vars(built) == vars(expected)
    assert built.details() == expected.details()


@settings(max_examples=300, deadline=None)
@given(
    trade_id=ids,
    seller=accounts,
    buyer=accounts,
    unit_type=st.sampled_from(["CEA", "CCER", "cea", "XYZ"]),
    quantity=st.integers(min_value=-2, max_value=10**12 + 2),
    vintage=st.none() | st.integers(min_value=2000, max_value=2105),
    hold_id=st.none() | ids,
    trade_date=st.none() | st.dates(),
    project=st.none() | st.sampled_from(["", "P-0001", "has space", "a/b"]),
)
def test_a_lean_movement_is_the_full_one(
    trade_id: str,
    seller: str,
    buyer: str,
    unit_type: str,
    quantity: int,
    vintage: int | None,
    hold_id: str | None,
    trade_date: date | None,
    project: str | None,
) -> None:
    same(Trade(trade_id, seller, buyer, unit_type, quantity, vintage, hold_id, trade_date, project))


@pytest.mark.parametrize(
    "trade",
    [
        Trade("T-1", "PWR-A", "PWR-A", "CEA", 5),
        Trade("", "PWR-A", "PWR-B", "CEA", 5),
        Trade("T 1", "PWR-A", "PWR-B", "CEA", 5),
        Trade("T-1", "pwr-a", "PWR-B", "CEA", 5),
        Trade("T-1", "PWR-A", "PWR-B", "CEA", True),
        Trade("T-1", "PWR-A", "PWR-B", "CEA", 5.0),  # type: ignore[arg-type]
        Trade("T-1", "PWR-A", "PWR-B", "CEA", 5, vintage=2025.0),  # type: ignore[arg-type]
        Trade("T-1", "PWR-A", "PWR-B", "CEA", 5, trade_date=datetime(2025, 1, 2, 3)),
        Trade("T-1", "PWR-A", "PWR-B", "CEA", 5, hold_id="bad hold"),
        Trade("T-\u00e9", "PWR-A", "PWR-B", "CEA", 5),
        Trade("T-1", "PWR-A", "PWR-B", "CCER", 5, project="P-\u00e9"),
    ],
)
def test_odd_trades_go_the_full_way(trade: Trade) -> None:
    same(trade)


def test_one_builder_for_a_batch_keeps_each_rows_own_content() -> None:
    build = TradeMovements().movement
    trades = [
        Trade("T-1", "PWR-A", "PWR-B", "CEA", 5, 2025),
        Trade("T-2", "PWR-B", "PWR-A", "CEA", 7),
        Trade("T-3", "PWR-A", "PWR-C", "CCER", 1, None, "H-1", date(2025, 3, 1), "P-1"),
        Trade("T-4", "PWR-A", "PWR-B", "CEA", 5, 2025),
    ]
    for trade in trades:
        built, expected = build(trade), trade.movement()
        assert vars(built) == vars(expected)


def record_fields(event: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k != "timestamp"}


def test_a_completed_record_is_the_event_complete_makes() -> None:
    blocks = [SerialBlock(UnitClass(UnitType.CEA, 2025), 1, 10)]
    fields: dict[str, Any] = {
        "party": "exchange",
        "client_id": "T-1",
        "kind": TransactionKind.SETTLEMENT,
        "source": "PWR-A",
        "destination": "PWR-B",
        "blocks": blocks,
        "reason": "exchange trade",
        "principal": Principal("exchange", "desk"),
        "fingerprint": "f" * 64,
        "details": {"quantity": 10},
    }
    [created] = Transaction.complete(**fields).pending_events
    record = Transaction.completed_record(**fields)
    assert type(record) is type(created)
    assert record_fields(record) == record_fields(created)
    txn = Transaction.complete(**fields)
    expected = vars(TransactionResult.of(txn, position=7)) | {"recorded_at": record.timestamp}
    assert vars(TransactionResult.of_record(record, 7)) == expected


def test_a_refused_record_is_the_event_refuse_makes() -> None:
    error = InsufficientUnits("10 CEA requested, 0 available", requested=10, available=0)
    fields: dict[str, Any] = {
        "party": "exchange",
        "client_id": "T-2",
        "kind": TransactionKind.SETTLEMENT,
        "source": "PWR-A",
        "destination": "PWR-B",
        "reason": "exchange trade",
        "principal": Principal("exchange", "desk"),
        "fingerprint": "f" * 64,
        "details": {"quantity": 10},
        "error": error,
    }
    txn = Transaction.refuse(**fields)
    [created] = txn.pending_events
    record = Transaction.refused_record(**fields)
    assert type(record) is type(created)
    assert record_fields(record) == record_fields(created)
    expected = vars(TransactionResult.of(txn, position=3)) | {"recorded_at": record.timestamp}
    assert vars(TransactionResult.of_record(record, 3)) == expected


CEA = UnitClass(UnitType.CEA, 2025)


def test_an_accounts_run_of_movements_shows_and_saves_as_before() -> None:
    """Debits and credits gathered as one pending run still show one event each, with
    the versions ``trigger_event`` gave them; collected, the run is one
    ``MovementsPosted`` at the first one's version, and a later event follows it on."""
    account = Account.open(
        "PWR-0001",
        AccountType.COMPLIANCE,
        Holder("Plant", "91110000100001234X", "POWER", "Beijing"),
        "mee/li",
    )
    account.credit(uuid4(), [SerialBlock(CEA, 1, 100)])
    first, second = uuid4(), uuid4()
    account.debit(first, UnitSelector(UnitType.CEA), 30)
    account.credit(second, [SerialBlock(CEA, 201, 210)])
    shown = account.pending_events
    assert [type(e).__name__ for e in shown] == ["Opened", "Credited", "Debited", "Credited"]
    assert [e.originator_version for e in shown] == [1, 2, 3, 4]
    assert account.version == 4
    account.freeze("court order", "mee/li")
    collected = account.collect_events()
    assert [type(e).__name__ for e in collected] == ["Opened", "MovementsPosted", "Frozen"]
    assert [e.originator_version for e in collected] == [1, 2, 3]
    assert account.version == 3
    posted: Any = collected[1]
    assert [m["transaction_id"] for m in posted.movements][1:] == [first, second]
    assert list(account.available) == [SerialBlock(CEA, 31, 100), SerialBlock(CEA, 201, 210)]
    replayed: Any = None
    for event in collected:
        replayed = event.mutate(replayed)
    assert replayed.available == account.available
    assert replayed.version == account.version


@given(
    quantity=st.integers(min_value=1, max_value=10**6),
    vintage=st.none() | st.integers(min_value=2005, max_value=2100),
    hold_id=st.none() | ids,
    trade_date=st.none() | st.dates(),
)
@settings(max_examples=100, deadline=None)
def test_a_trades_details_are_the_movements(
    quantity: int, vintage: int | None, hold_id: str | None, trade_date: date | None
) -> None:
    """Same keys, same order: the record's stored JSON (and the hash chain) see them."""
    from registry.application.perform import _details

    movement = Trade(
        "T-1", "PWR-A", "PWR-B", "CEA", quantity, vintage, hold_id, trade_date
    ).movement()
    assert list(_details(movement).items()) == list(movement.details().items())


@given(name=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_fast_uuid5_is_uuid5(name: str) -> None:
    from uuid import uuid5

    from registry.domain.ids import NAMESPACE
    from registry.domain.transactions import fast_uuid5

    try:
        expected = uuid5(NAMESPACE, name)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            fast_uuid5(name)
        return
    made = fast_uuid5(name)
    assert made == expected
    assert hash(made) == hash(expected)
    assert (made.version, made.variant, str(made)) == (5, expected.variant, str(expected))
    assert made.is_safe == expected.is_safe

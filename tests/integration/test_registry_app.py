"""Application use cases, the same cases on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest

from registry.application import Registry, Trade, TradeOutcome
from registry.domain.accounts import Account, AccountState, AccountType, Holder
from registry.domain.errors import (
    AccountExistsWithDifferentContent,
    ConcurrencyConflict,
    HoldExistsWithDifferentContent,
    HoldNotActive,
    HoldNotExpired,
    TransactionExistsWithDifferentContent,
    UnknownAccount,
    UnknownSerial,
    UnknownTransaction,
)
from registry.domain.holds import HoldStatus
from registry.domain.transactions import Principal, TransactionKind, TransactionStatus
from registry.domain.units import SerialBlock, UnitClass, UnitSelector, UnitType
from tests.support import (
    EXCHANGE,
    REGULATOR,
    FakeClock,
    assert_conserved,
    open_company,
    open_trader,
    register_project,
)

CEA25 = UnitClass(UnitType.CEA, 2025)
CEA24 = UnitClass(UnitType.CEA, 2024)
CCER = UnitClass(UnitType.CCER, 2024, "P-0001")
ANY_CEA = UnitSelector(UnitType.CEA)


def blocks(unit_class: UnitClass, *ranges: tuple[int, int]) -> tuple[SerialBlock, ...]:
    return tuple(SerialBlock(unit_class, a, b) for a, b in ranges)


def available(registry: Registry, account_id: str) -> int:
    return sum(h.available for h in registry.get_holdings(account_id))


def held(registry: Registry, account_id: str) -> int:
    return sum(h.held for h in registry.get_holdings(account_id))


@pytest.fixture
def funded(registry: Registry) -> Registry:
    """PWR-0001 and PWR-0002 hold 1,000 CEA 2025 each; TRD-0001 is an empty trader."""
    open_company(registry, "PWR-0001")
    open_company(registry, "PWR-0002")
    open_trader(registry, "TRD-0001")
    registry.issue_units(REGULATOR, "ISS-1", CEA25, 5000, "vintage 2025")
    registry.transfer(
        REGULATOR, "RES-1", "CN-ISSUANCE", "CN-ALLOCATION-RESERVE", ANY_CEA, 5000, "to reserve"
    )
    for n, account in enumerate(["PWR-0001", "PWR-0002"]):
        assert registry.allocate(REGULATOR, f"AL-{n}", account, ANY_CEA, 1000, "pre").ok
    return registry


# -- accounts -------------------------------------------------------------------


def test_national_accounts_exist_once(registry: Registry) -> None:
    again = registry.ensure_national_accounts()
    assert all(r.replayed for r in again)
    ids = registry.account_ids()
    assert sorted(ids) == [
        "CN-ALLOCATION-RESERVE",
        "CN-CANCELLATION",
        "CN-ISSUANCE",
        "CN-SURRENDER",
    ]


def test_open_account_is_idempotent_and_conflicts_are_refused(registry: Registry) -> None:
    holder = Holder("Plant", "91110000100001234X", "STEEL", "Hebei")
    first = registry.open_account(REGULATOR, "STL-0001", AccountType.COMPLIANCE, holder)
    again = registry.open_account(REGULATOR, "STL-0001", AccountType.COMPLIANCE, holder)
    assert not first.replayed and again.replayed
    assert registry.get_account("STL-0001").holder["sector"] == "STEEL"
    with pytest.raises(AccountExistsWithDifferentContent):
        registry.open_account(REGULATOR, "STL-0001", AccountType.TRADING, Holder("Other"))
    with pytest.raises(UnknownAccount):
        registry.get_account("NOPE-0001")


# -- issuance and allocation ------------------------------------------------------


def test_issuance_numbers_serials_per_class_and_never_reuses_them(registry: Registry) -> None:
    one = registry.issue_units(REGULATOR, "I1", CEA25, 100, "")
    two = registry.issue_units(REGULATOR, "I2", CEA25, 50, "")
    owner = register_project(registry, "P-0001")
    other = registry.issue_units(REGULATOR, "I3", CCER, 7, "")
    assert one.blocks == blocks(CEA25, (1, 100))
    assert two.blocks == blocks(CEA25, (101, 150))
    assert other.blocks == blocks(CCER, (1, 7))
    replay = registry.issue_units(REGULATOR, "I1", CEA25, 100, "")
    assert replay.replayed and replay.blocks == one.blocks
    assert registry.issue_units(REGULATOR, "I4", CEA25, 1, "").blocks == blocks(CEA25, (151, 151))
    holdings = {h.unit_class: h.total for h in registry.get_holdings("CN-ISSUANCE")}
    assert holdings == {CEA25: 151}
    assert other.destination == owner  # CCER lands in the project owner's account
    assert {h.unit_class: h.total for h in registry.get_holdings(owner)} == {CCER: 7}
    assert_conserved(registry)


def test_allocation_only_to_compliance_accounts_and_refusals_are_recorded(funded: Registry) -> None:
    refused = funded.allocate(REGULATOR, "AL-X", "TRD-0001", ANY_CEA, 10, "wrong type")
    assert refused.status is TransactionStatus.REFUSED
    assert refused.refusal_reason == "MOVEMENT_NOT_ALLOWED"
    retry = funded.allocate(REGULATOR, "AL-X", "TRD-0001", ANY_CEA, 10, "wrong type")
    assert retry.replayed and retry.refusal_reason == "MOVEMENT_NOT_ALLOWED"
    recorded = funded.get_transaction("mee", "AL-X")
    assert recorded.status is TransactionStatus.REFUSED
    assert recorded.principal == str(REGULATOR)
    returned = funded.return_allocation(REGULATOR, "RET-1", "PWR-0001", ANY_CEA, 100, "true-up")
    assert returned.ok and returned.destination == "CN-ALLOCATION-RESERVE"
    assert available(funded, "PWR-0001") == 900
    assert_conserved(funded)


# -- transfers and settlement -------------------------------------------------------


def test_transfer_moves_lowest_serials_and_destination_merges(funded: Registry) -> None:
    first = funded.transfer(REGULATOR, "TR-1", "PWR-0001", "TRD-0001", ANY_CEA, 10, "")
    second = funded.transfer(REGULATOR, "TR-2", "PWR-0001", "TRD-0001", ANY_CEA, 5, "")
    assert first.blocks == blocks(CEA25, (1, 10))
    assert second.blocks == blocks(CEA25, (11, 15))
    [holding] = funded.get_holdings("TRD-0001")
    assert holding.blocks == blocks(CEA25, (1, 15))
    assert funded.locate_serial(CEA25, 12) == ("TRD-0001", False)
    assert funded.locate_serial(CEA25, 16) == ("PWR-0001", False)
    with pytest.raises(UnknownSerial):
        funded.locate_serial(CEA25, 5001)


def test_trade_retries_replay_and_different_content_is_refused(funded: Registry) -> None:
    trade = Trade("SEEE-1", "PWR-0001", "TRD-0001", "CEA", 100, 2025)
    first = funded.settle_trade(EXCHANGE, trade)
    again = funded.settle_trade(EXCHANGE, trade)
    assert first.ok and not first.replayed and first.position is not None
    assert again.replayed and again.blocks == first.blocks and again.position is None
    assert available(funded, "TRD-0001") == 100
    with pytest.raises(TransactionExistsWithDifferentContent):
        funded.settle_trade(EXCHANGE, Trade("SEEE-1", "PWR-0001", "TRD-0001", "CEA", 101))
    assert available(funded, "TRD-0001") == 100


def test_client_ids_are_scoped_by_party(funded: Registry) -> None:
    other = Principal("other-exchange", "bot")
    a = funded.settle_trade(EXCHANGE, Trade("T-1", "PWR-0001", "TRD-0001", "CEA", 10))
    b = funded.settle_trade(other, Trade("T-1", "PWR-0002", "TRD-0001", "CEA", 20))
    assert a.ok and b.ok and not b.replayed
    assert funded.get_transaction("other-exchange", "T-1").quantity == 20
    assert available(funded, "TRD-0001") == 30


def test_over_spend_is_refused_recorded_and_changes_nothing(funded: Registry) -> None:
    refused = funded.settle_trade(EXCHANGE, Trade("T-9", "PWR-0001", "TRD-0001", "CEA", 1001))
    assert refused.status is TransactionStatus.REFUSED
    assert refused.refusal_reason == "INSUFFICIENT_UNITS"
    assert refused.refusal_metadata["available"] == "1000"
    assert available(funded, "PWR-0001") == 1000
    # The id stays burned: a retry with the same content gets the same refusal even
    # though the seller could now pay.
    funded.transfer(REGULATOR, "TOPUP", "CN-ALLOCATION-RESERVE", "PWR-0001", ANY_CEA, 1, "")
    retry = funded.settle_trade(EXCHANGE, Trade("T-9", "PWR-0001", "TRD-0001", "CEA", 1001))
    assert retry.replayed and retry.refusal_reason == "INSUFFICIENT_UNITS"
    assert available(funded, "TRD-0001") == 0


def test_unknown_accounts_are_recorded_refusals(funded: Registry) -> None:
    result = funded.settle_trade(EXCHANGE, Trade("T-U", "PWR-0001", "GHOST-001", "CEA", 1))
    assert result.refusal_reason == "UNKNOWN_ACCOUNT"
    assert funded.get_transaction("exchange", "T-U").refusal_metadata == {"account": "GHOST-001"}
    with pytest.raises(UnknownTransaction):
        funded.get_transaction("exchange", "never-sent")


def test_frozen_account_cannot_send_but_can_receive(funded: Registry) -> None:
    funded.freeze_account(REGULATOR, "PWR-0001", "court order 2026-17")
    assert funded.get_account("PWR-0001").state is AccountState.FROZEN
    out = funded.settle_trade(EXCHANGE, Trade("T-F1", "PWR-0001", "TRD-0001", "CEA", 1))
    assert out.refusal_reason == "ACCOUNT_FROZEN"
    into = funded.settle_trade(EXCHANGE, Trade("T-F2", "PWR-0002", "PWR-0001", "CEA", 1))
    assert into.ok
    funded.unfreeze_account(REGULATOR, "PWR-0001", "order lifted")
    assert funded.settle_trade(EXCHANGE, Trade("T-F3", "PWR-0001", "TRD-0001", "CEA", 1)).ok


def test_closed_account_takes_nothing(funded: Registry) -> None:
    open_trader(funded, "TRD-0002")
    funded.close_account(REGULATOR, "TRD-0002", "holder request")
    assert funded.get_account("TRD-0002").state is AccountState.CLOSED
    result = funded.settle_trade(EXCHANGE, Trade("T-C", "PWR-0001", "TRD-0002", "CEA", 1))
    assert result.refusal_reason == "ACCOUNT_CLOSED"


# -- surrender, cancellation, reversal ------------------------------------------------


def test_surrender_records_against_the_obligation_and_units_never_move_again(
    funded: Registry,
) -> None:
    result = funded.surrender(REGULATOR, "SUR-1", "PWR-0001", ANY_CEA, 600, 2025, "2025")
    assert result.ok and result.destination == "CN-SURRENDER"
    assert funded.get_surrendered("PWR-0001", 2025) == {"CEA": 600}
    assert funded.get_surrendered("PWR-0001", 2024) == {}
    escape = funded.transfer(REGULATOR, "ESC-1", "CN-SURRENDER", "TRD-0001", ANY_CEA, 1, "")
    assert escape.refusal_reason == "UNITS_RETIRED"
    wrong = funded.surrender(REGULATOR, "SUR-2", "TRD-0001", ANY_CEA, 1, 2025, "")
    assert wrong.refusal_reason == "MOVEMENT_NOT_ALLOWED"


def test_reversal_puts_the_same_serials_back_once(funded: Registry) -> None:
    surrender = funded.surrender(REGULATOR, "SUR-1", "PWR-0001", ANY_CEA, 600, 2025, "")
    reversal = funded.reverse(REGULATOR, "REV-1", "mee", "SUR-1", "surrendered in error")
    assert reversal.ok and reversal.kind is TransactionKind.REVERSAL
    assert reversal.blocks == surrender.blocks
    assert (reversal.source, reversal.destination) == ("CN-SURRENDER", "PWR-0001")
    assert available(funded, "PWR-0001") == 1000
    assert funded.get_surrendered("PWR-0001", 2025) == {"CEA": 0}
    assert funded.get_transaction("mee", "SUR-1").reversed
    twice = funded.reverse(REGULATOR, "REV-2", "mee", "SUR-1", "again")
    assert twice.refusal_reason == "TRANSACTION_ALREADY_REVERSED"
    issuance = funded.reverse(REGULATOR, "REV-3", "mee", "ISS-1", "no")
    assert issuance.refusal_reason == "TRANSACTION_NOT_REVERSIBLE"
    unknown = funded.reverse(REGULATOR, "REV-4", "mee", "NOPE", "no")
    assert unknown.refusal_reason == "UNKNOWN_TRANSACTION"
    assert_conserved(funded)


def test_cancellation_and_its_reversal(funded: Registry) -> None:
    cancel = funded.cancel(REGULATOR, "CXL-1", "PWR-0002", ANY_CEA, 25, "voluntary")
    assert cancel.ok and cancel.destination == "CN-CANCELLATION"
    assert available(funded, "CN-CANCELLATION") == 25
    assert funded.reverse(REGULATOR, "REV-C", "mee", "CXL-1", "mistake").ok
    assert available(funded, "CN-CANCELLATION") == 0
    assert available(funded, "PWR-0002") == 1000


def test_reversal_refused_when_the_units_moved_on(funded: Registry) -> None:
    funded.settle_trade(EXCHANGE, Trade("T-1", "PWR-0001", "TRD-0001", "CEA", 10))
    funded.settle_trade(EXCHANGE, Trade("T-2", "TRD-0001", "PWR-0002", "CEA", 10))
    result = funded.reverse(REGULATOR, "REV-1", "exchange", "T-1", "disputed")
    assert result.refusal_reason == "UNITS_NOT_HELD"
    assert not funded.get_transaction("exchange", "T-1").reversed


# -- holds ------------------------------------------------------------------------------


def test_held_units_cannot_move_until_settled_or_released(funded: Registry) -> None:
    hold = funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 700, 600)
    assert hold.status is HoldStatus.ACTIVE and hold.blocks == blocks(CEA25, (1, 700))
    assert (available(funded, "PWR-0001"), held(funded, "PWR-0001")) == (300, 700)
    spend = funded.transfer(REGULATOR, "TR-H", "PWR-0001", "TRD-0001", ANY_CEA, 301, "")
    assert spend.refusal_reason == "INSUFFICIENT_UNITS"
    surrender = funded.surrender(REGULATOR, "SUR-H", "PWR-0001", ANY_CEA, 301, 2025, "")
    assert surrender.refusal_reason == "INSUFFICIENT_UNITS"
    twice = funded.place_hold(EXCHANGE, "H-2", "PWR-0001", ANY_CEA, 301, 600)
    assert twice.status is HoldStatus.REFUSED and twice.refusal_reason == "INSUFFICIENT_UNITS"
    assert funded.locate_serial(CEA25, 1) == ("PWR-0001", True)
    settle = funded.settle_trade(
        EXCHANGE, Trade("T-H", "PWR-0001", "TRD-0001", "CEA", 400, hold_id="H-1")
    )
    assert settle.ok and settle.blocks == blocks(CEA25, (1, 400))
    assert (available(funded, "PWR-0001"), held(funded, "PWR-0001")) == (600, 0)
    after = funded.get_hold("exchange", "H-1")
    assert after.status is HoldStatus.SETTLED and after.settled_quantity == 400
    again = funded.settle_trade(
        EXCHANGE, Trade("T-H2", "PWR-0001", "TRD-0001", "CEA", 1, hold_id="H-1")
    )
    assert again.refusal_reason == "HOLD_NOT_ACTIVE"


def test_hold_placement_is_idempotent(funded: Registry) -> None:
    first = funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 100, 600)
    again = funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 100, 600)
    assert again.replayed and again.blocks == first.blocks
    assert held(funded, "PWR-0001") == 100
    with pytest.raises(HoldExistsWithDifferentContent):
        funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 101, 600)


def test_release_is_safe_to_retry(funded: Registry) -> None:
    funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 100, 600)
    released = funded.release_hold(EXCHANGE, "H-1", "order cancelled")
    assert released.status is HoldStatus.RELEASED and not released.replayed
    assert funded.release_hold(EXCHANGE, "H-1", "order cancelled").replayed
    assert (available(funded, "PWR-0001"), held(funded, "PWR-0001")) == (1000, 0)
    with pytest.raises(HoldNotActive):
        funded.expire_hold(EXCHANGE, "exchange", "H-1")


def test_holds_expire_after_their_timeout(funded: Registry, clock: FakeClock) -> None:
    funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 100, 60)
    funded.place_hold(EXCHANGE, "H-2", "PWR-0002", ANY_CEA, 100, 3600)
    with pytest.raises(HoldNotExpired):
        funded.expire_hold(EXCHANGE, "exchange", "H-1")
    clock.advance(60)
    late = funded.settle_trade(
        EXCHANGE, Trade("T-L", "PWR-0001", "TRD-0001", "CEA", 10, hold_id="H-1")
    )
    assert late.refusal_reason == "HOLD_EXPIRED"
    expired = funded.expire_due_holds()
    assert [(h.hold_id, h.status) for h in expired] == [("H-1", HoldStatus.EXPIRED)]
    assert held(funded, "PWR-0001") == 0 and held(funded, "PWR-0002") == 100
    assert funded.expire_due_holds() == []


# -- batch settlement -------------------------------------------------------------------


def test_batch_is_evaluated_in_order_with_one_result_per_trade(funded: Registry) -> None:
    trades = [
        Trade("B-1", "PWR-0001", "TRD-0001", "CEA", 600),
        Trade("B-2", "TRD-0001", "PWR-0002", "CEA", 500),  # needs B-1's units
        Trade("B-3", "PWR-0001", "TRD-0001", "CEA", 500),  # only 400 left: refused
        Trade("B-4", "PWR-0001", "TRD-0001", "CEA", 0),  # malformed: rejected
        Trade("B-1", "PWR-0001", "TRD-0001", "CEA", 600),  # repeat: replay of B-1
        Trade("B-2", "TRD-0001", "PWR-0002", "CEA", 1),  # repeat, other content
        Trade("B-5", "PWR-0001", "GHOST-01", "CEA", 1),  # unknown account: refused
    ]
    results = funded.settle_trades(EXCHANGE, trades)
    assert [(r.trade_id, r.outcome, r.reason) for r in results] == [
        ("B-1", TradeOutcome.SETTLED, ""),
        ("B-2", TradeOutcome.SETTLED, ""),
        ("B-3", TradeOutcome.REFUSED, "INSUFFICIENT_UNITS"),
        ("B-4", TradeOutcome.REJECTED, "QUANTITY_NOT_POSITIVE"),
        ("B-1", TradeOutcome.ALREADY_SETTLED, ""),
        ("B-2", TradeOutcome.REJECTED, "TRANSACTION_EXISTS_WITH_DIFFERENT_CONTENT"),
        ("B-5", TradeOutcome.REFUSED, "UNKNOWN_ACCOUNT"),
    ]
    positions = {
        r.position for r in results if r.outcome in (TradeOutcome.SETTLED, TradeOutcome.REFUSED)
    }
    assert len(positions) == 1, "one atomic save for the whole batch"
    assert (
        available(funded, "PWR-0001"),
        available(funded, "TRD-0001"),
        available(funded, "PWR-0002"),
    ) == (400, 100, 1500)
    with pytest.raises(UnknownTransaction):
        funded.get_transaction("exchange", "B-4")
    again = funded.settle_trades(EXCHANGE, trades[:3])
    assert [r.outcome for r in again] == [
        TradeOutcome.ALREADY_SETTLED,
        TradeOutcome.ALREADY_SETTLED,
        TradeOutcome.REFUSED,
    ]
    assert again[2].transaction is not None and again[2].transaction.replayed
    mixed = funded.settle_trades(
        EXCHANGE,
        [
            Trade("B-1", "PWR-0001", "TRD-0001", "CEA", 600),
            Trade("B-6", "PWR-0001", "TRD-0001", "CEA", 50),
        ],
    )
    assert [r.outcome for r in mixed] == [TradeOutcome.ALREADY_SETTLED, TradeOutcome.SETTLED]
    assert available(funded, "TRD-0001") == 150
    assert_conserved(funded)


def test_batch_against_holds(funded: Registry) -> None:
    funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 300, 600)
    results = funded.settle_trades(
        EXCHANGE,
        [
            Trade("BH-1", "PWR-0001", "TRD-0001", "CEA", 200, hold_id="H-1"),
            Trade("BH-2", "PWR-0001", "TRD-0001", "CEA", 50, hold_id="H-1"),
            Trade("BH-3", "PWR-0002", "TRD-0001", "CEA", 50, hold_id="H-9"),
        ],
    )
    assert [r.reason for r in results] == ["", "HOLD_NOT_ACTIVE", "UNKNOWN_HOLD"]
    assert (available(funded, "PWR-0001"), held(funded, "PWR-0001")) == (800, 0)


def test_history_survives_snapshots_and_a_restart(funded: Registry) -> None:
    for n in range(230):  # past the snapshot interval of 200 account events
        source, target = ("PWR-0001", "PWR-0002") if n % 2 else ("PWR-0002", "PWR-0001")
        assert funded.transfer(REGULATOR, f"PP-{n}", source, target, ANY_CEA, 7, "").ok
    expected = {a: funded.get_holdings(a) for a in ("PWR-0001", "PWR-0002")}
    assert funded.snapshots is not None
    snapshots = list(funded.snapshots.get(Account.id_for("PWR-0001")))
    assert snapshots and snapshots[-1].originator_version >= 200
    if funded.env.get("PERSISTENCE_MODULE") != "eventsourcing.popo":
        fresh = Registry(env=dict(funded.env))  # a restart: no cache, loads via snapshot
        try:
            assert {a: fresh.get_holdings(a) for a in expected} == expected
        finally:
            fresh.close()
    assert_conserved(funded)


# -- optimistic concurrency ---------------------------------------------------------------


class InterferingClock(FakeClock):
    """A clock read mid-command (hold settlement reads the time after loading the
    accounts): the first ``times`` reads commit a competing transfer from the same
    account first, so the command's save loses the race."""

    def __init__(self, registry: Registry, times: int, name: str) -> None:
        super().__init__()
        self.registry, self.times, self.name, self.calls = registry, times, name, 0

    def __call__(self) -> datetime:
        self.calls += 1
        if self.calls <= self.times:
            assert self.registry.transfer(
                REGULATOR,
                f"{self.name}-{self.calls}",
                "PWR-0001",
                "PWR-0002",
                ANY_CEA,
                1,
                "competing writer",
            ).ok
        return self.now


def test_lost_races_are_retried_then_surface_as_a_retryable_error(funded: Registry) -> None:
    funded.place_hold(EXCHANGE, "H-1", "PWR-0001", ANY_CEA, 100, 600)
    funded.clock = racing = InterferingClock(funded, times=2, name="RACE-A")
    settled = funded.settle_trade(
        EXCHANGE, Trade("T-R", "PWR-0001", "TRD-0001", "CEA", 10, hold_id="H-1")
    )
    assert settled.ok and not settled.replayed
    assert racing.calls == 3, "two lost races, then the third attempt saved"
    assert available(funded, "TRD-0001") == 10 and available(funded, "PWR-0001") == 988

    funded.place_hold(EXCHANGE, "H-2", "PWR-0001", ANY_CEA, 100, 600)
    funded.max_attempts = 3
    funded.clock = InterferingClock(funded, times=3, name="RACE-B")
    with pytest.raises(ConcurrencyConflict) as raised:
        funded.settle_trade(
            EXCHANGE, Trade("T-S", "PWR-0001", "TRD-0001", "CEA", 10, hold_id="H-2")
        )
    assert raised.value.retryable and raised.value.reason == "CONCURRENT_MODIFICATION"
    with pytest.raises(UnknownTransaction):
        funded.get_transaction("exchange", "T-S")
    assert held(funded, "PWR-0001") == 100 and available(funded, "TRD-0001") == 10
    assert_conserved(funded)

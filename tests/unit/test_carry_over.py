"""The carry-over limit's arithmetic, without I/O: which tonnes are carried, net sales
from transaction records (the read model's definition), the pool a NET_SALES rule
draws on, what a refusal says, and the per-account record of carried tonnes used.

Rule: MEE, 2023-2024 allowance cap and allocation plan, power: allowances of 2019-2024
carried over up to 1.5 x net sales + 10,000 t per company (``docs/compliance.md``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from registry.domain.carry_over import (
    CarryOverUse,
    RecordedTransaction,
    carried_tonnes,
    net_sales,
    past_carried_surrenders,
)
from registry.domain.errors import CarryOverLimitExceeded, InsufficientUnits
from registry.domain.obligations import ComplianceObligation
from registry.domain.rule_defaults import shipped_rules
from registry.domain.rules import DEFAULT_RULES, CarryOver, ComplianceRules
from registry.domain.transactions import Principal, Transaction, TransactionKind
from registry.domain.units import SerialBlock, UnitClass, UnitType

POWER_2025 = shipped_rules(2025)["POWER"].rules
WHO = Principal("exchange", "settlement")


def cea(vintage: int, quantity: int, first: int = 1) -> SerialBlock:
    return SerialBlock(UnitClass(UnitType.CEA, vintage), first, first + quantity - 1)


def ccer(quantity: int) -> SerialBlock:
    return SerialBlock(UnitClass(UnitType.CCER, 2024, "P-0001"), 1, quantity)


def moved(
    kind: TransactionKind,
    source: str,
    destination: str,
    *blocks: SerialBlock,
    year: int | None = None,
) -> Transaction:
    return Transaction.complete(
        party="exchange",
        client_id=str(uuid4()),
        kind=kind,
        source=source,
        destination=destination,
        blocks=list(blocks),
        reason="test",
        principal=WHO,
        fingerprint="",
        details={} if year is None else {"compliance_year": year},
    )


def records(*transactions: Transaction) -> list[RecordedTransaction]:
    return [RecordedTransaction.of(txn) for txn in transactions]


def sale(seller: str, buyer: str, *blocks: SerialBlock) -> Transaction:
    return moved(TransactionKind.SETTLEMENT, seller, buyer, *blocks)


def test_carried_tonnes_are_allowances_of_the_carried_vintages() -> None:
    """2025 under the shipped power rule (vintages up to 2024): 2019 + 2024 = 300 +
    400 = 700 t are carried; 2025 allowances (500 t) and CCER (50 t) are not. Under
    the default rule every vintage before the year is carried: 2019 + 2024 again."""
    blocks = [cea(2019, 300), cea(2024, 400), cea(2025, 500), ccer(50)]
    assert carried_tonnes(POWER_2025, 2025, blocks) == 700
    assert carried_tonnes(DEFAULT_RULES, 2025, blocks) == 700
    assert carried_tonnes(POWER_2025, 2025, [cea(2025, 500)]) == 0


def test_net_sales_from_transaction_records() -> None:
    """BANK sells 30,000 and 20,000 t and buys 10,000 t on the exchange: 50,000 -
    10,000 = 40,000 t. Not counted: a transfer out (5,000 t), a surrender (1,000 t), a
    trade to itself (out and in: 0), a trade's CCER (700 t; its CEA 300 t counts: 40,300
    t), and anything recorded outside [since, until)."""
    history = [
        sale("BANK", "TRADER", cea(2024, 30_000)),
        sale("BANK", "TRADER", cea(2024, 20_000)),
        sale("TRADER", "BANK", cea(2024, 10_000)),
        moved(TransactionKind.TRANSFER, "BANK", "TRADER", cea(2024, 5_000)),
        moved(TransactionKind.SURRENDER, "BANK", "CN-SURRENDER", cea(2024, 1_000), year=2025),
        sale("BANK", "BANK", cea(2024, 9_999)),
    ]
    now = history[0].created_on
    since, until = now - timedelta(days=1), now + timedelta(days=1)
    assert net_sales("BANK", records(*history), since, until) == 40_000
    assert net_sales("TRADER", records(*history), since, until) == -40_000
    mixed = sale("BANK", "TRADER", cea(2024, 300), ccer(700))
    assert net_sales("BANK", records(*history, mixed), since, until) == 40_300
    first = records(history[0])
    assert net_sales("BANK", first, now, now + timedelta(microseconds=1)) == 30_000
    assert net_sales("BANK", first, now - timedelta(days=1), now) == 0  # the end is excluded


def test_the_shipped_period_is_whole_days_in_utc() -> None:
    """2019-01-01..2024-12-31 inclusive: [2019-01-01 00:00, 2025-01-01 00:00) UTC."""
    assert POWER_2025.net_sales_window() == (
        datetime(2019, 1, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert DEFAULT_RULES.net_sales_window() is None
    assert ComplianceRules(carry_over=CarryOver.NONE.value).net_sales_window() is None


def test_years_with_the_same_period_and_vintages_share_one_pool() -> None:
    """The pool is the period and the newest carried vintage; a and b size it."""
    bigger = ComplianceRules(**{**POWER_2025.as_dict(), "carry_over_base_tonnes": 20_000})
    other_period = ComplianceRules(
        **{**POWER_2025.as_dict(), "carry_over_sales_from": "2021-01-01"}
    )
    assert POWER_2025.carry_over_scope == bigger.carry_over_scope
    assert POWER_2025.carry_over_scope != other_period.carry_over_scope
    assert POWER_2025.carry_over_scope == "NET_SALES:2019-01-01..2024-12-31:vintages..2024"
    assert DEFAULT_RULES.carry_over_scope is None
    assert ComplianceRules(carry_over=CarryOver.NONE.value).carry_over_scope is None


def test_a_refusal_names_the_limit_the_net_sales_what_was_carried_and_asked() -> None:
    """Net sales 40,000 t: limit 1.5 x 40,000 + 10,000 = 70,000 t; 50,000 t already
    carried, 20,001 asked: 70,001 > 70,000. A net buyer (-5,000 t) is counted as 0."""
    obligation = ComplianceObligation.start("BANK", 2025)
    with pytest.raises(CarryOverLimitExceeded) as raised:
        obligation.check_surrender(POWER_2025, [cea(2024, 20_001)], 40_000, carried_before=50_000)
    message = raised.value.message
    for said in (
        "20001 t of carried vintages",
        "50000 t already carried",
        "70001 t would exceed",
        "limit of 70000 t",
        "1.5 x net sales of 40000 t (2019-01-01..2024-12-31) + 10000 t",
    ):
        assert said in message, message
    assert raised.value.metadata == {"limit": "70000", "used": "50000", "requested": "20001"}
    obligation.check_surrender(POWER_2025, [cea(2024, 20_000)], 40_000, carried_before=50_000)
    with pytest.raises(CarryOverLimitExceeded) as bought:
        obligation.check_surrender(POWER_2025, [cea(2024, 10_001)], -5_000)
    assert "net sales of -5000 t" in bought.value.message and "counted as 0" in bought.value.message


def test_the_record_of_carried_tonnes_used() -> None:
    """Two surrenders take 30,000 and 40,000 t from the 2025 pool and 5,000 t from
    another: the pool has 70,000 t used. The same surrender recorded again changes
    nothing; reversing the 40,000 t one gives them back (30,000 used); reversing a
    surrender that took nothing gives nothing."""
    pool = POWER_2025.carry_over_scope
    assert pool is not None
    use = CarryOverUse.start("BANK")
    first, second, elsewhere = uuid4(), uuid4(), uuid4()
    assert use.record(first, 2025, pool, 30_000)
    assert use.record(second, 2026, pool, 40_000)
    assert use.record(elsewhere, 2027, "NET_SALES:other", 5_000)
    assert not use.record(second, 2026, pool, 40_000)
    assert not use.record(uuid4(), 2025, pool, 0)
    assert (use.used(pool), use.used("NET_SALES:other")) == (70_000, 5_000)
    assert use.give_back(second, uuid4()) == 40_000
    assert use.give_back(second, uuid4()) == 0
    assert use.give_back(uuid4(), uuid4()) == 0
    assert use.used(pool) == 30_000
    replayed = CarryOverUse.start("BANK")
    for event in use.collect_events()[1:]:
        replayed = event.mutate(replayed)
    assert replayed.used(pool) == 30_000 and replayed.version == use.version


def test_past_surrenders_are_counted_from_their_blocks() -> None:
    """Before carried tonnes were recorded: a surrender for 2025 of 2024 (8,000 t) and
    2025 (2,000 t) allowances counts 8,000 t in the 2025 pool; one for a year whose
    rules draw on no pool (2023), another account's, a refused one and a reversed one
    count nothing."""
    counted = moved(
        TransactionKind.SURRENDER,
        "BANK",
        "CN-SURRENDER",
        cea(2024, 8_000),
        cea(2025, 2_000),
        year=2025,
    )
    unlimited = moved(TransactionKind.SURRENDER, "BANK", "CN-SURRENDER", cea(2022, 1), year=2023)
    others = moved(TransactionKind.SURRENDER, "OTHER", "CN-SURRENDER", cea(2024, 1), year=2025)
    reversed_ = moved(TransactionKind.SURRENDER, "BANK", "CN-SURRENDER", cea(2024, 3), year=2025)
    reversed_.mark_reversed(uuid4())
    refused = Transaction.refuse(
        party="mee",
        client_id="S-REFUSED",
        kind=TransactionKind.SURRENDER,
        source="BANK",
        destination="CN-SURRENDER",
        reason="test",
        principal=WHO,
        fingerprint="",
        details={"compliance_year": 2025},
        error=InsufficientUnits("none left"),
    )
    found = past_carried_surrenders(
        "BANK",
        records(counted, unlimited, others, reversed_, refused),
        {2025: POWER_2025, 2023: DEFAULT_RULES},
    )
    assert found == [(counted.id, 2025, POWER_2025.carry_over_scope, 8_000)]


def test_the_event_topics_are_stable() -> None:
    """Stored events are found by these names: moving the class must not change them."""
    assert [
        CarryOverUse.TOPIC,
        CarryOverUse.Started.TOPIC,
        CarryOverUse.CarriedSurrendered.TOPIC,
        CarryOverUse.CarriedReturned.TOPIC,
    ] == [
        "registry.CarryOverUse",
        "registry.CarryOverUse.Started",
        "registry.CarryOverUse.CarriedSurrendered",
        "registry.CarryOverUse.CarriedReturned",
    ]

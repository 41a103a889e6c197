"""The NET_SALES carry-over limit enforced at surrender, through the application on
every backend (in-memory, SQLite, PostgreSQL): the banker at the limit, a second year
drawing on the same pool, a reversal giving tonnes back, the write side's net sales
equal to the read model's, and a store written before carried tonnes were recorded.

Source of the rule: MEE, 2023-2024 allowance cap and allocation plan, power (15 October
2024): allowances of 2019-2024 carried into later years up to 1.5 x the company's net
sales + 10,000 t (``docs/compliance.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.application import Registry, Trade
from registry.application.unit_of_work import UnitOfWork
from registry.bootstrap import build_registry
from registry.domain.carry_over import CarryOverUse, net_sales
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import CarryOver, ComplianceRules
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence.account_history import account_transactions
from registry.persistence.engine import make_engine
from registry.readmodels.queries import ReadModels
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import EXCHANGE, REGULATOR, assert_conserved, fresh_pg_database, open_company

CEA24 = UnitSelector(UnitType.CEA, 2024)
CEA25 = UnitSelector(UnitType.CEA, 2025)


def net_sales_rules(first: str = "2000-01-01", last: str = "2099-12-31") -> ComplianceRules:
    """The shipped 2025 power rule (1.5 x net sales + 10,000 t of vintages up to 2024),
    with a period around today: the settlements of a test are recorded now."""
    return ComplianceRules(
        carry_over=CarryOver.NET_SALES.value,
        carry_over_max_vintage=2024,
        carry_over_net_sales_bps=15_000,
        carry_over_base_tonnes=10_000,
        carry_over_sales_from=first,
        carry_over_sales_to=last,
    )


def surrender(
    registry: Registry, txn: str, quantity: int, year: int = 2025, selector: UnitSelector = CEA24
) -> str:
    """BANK surrenders for ``year``; the refusal reason, or "" when it completed."""
    result = registry.surrender(REGULATOR, txn, "BANK", selector, quantity, year, "compliance")
    return result.refusal_reason


def banker(registry: Registry) -> Registry:
    """BANK (power) is allocated 150,000 t of 2024 CEA, sells 50,000 t of them to
    TRADER on the exchange (one batch) and buys 10,000 t back (through the seller's
    hold of 12,000 t, the rest released): net sales 50,000 - 10,000 = 40,000 t.
    It holds 150,000 - 50,000 + 10,000 = 110,000 t of 2024 and 20,000 t of 2025."""
    registry.issue_units(REGULATOR, "ISS-24", UnitClass(UnitType.CEA, 2024), 200_000, "")
    registry.issue_units(REGULATOR, "ISS-25", UnitClass(UnitType.CEA, 2025), 20_000, "")
    open_company(registry, "BANK")
    open_company(registry, "TRADER")
    registry.allocate(REGULATOR, "AL-24", "BANK", CEA24, 150_000, "2024", source="CN-ISSUANCE")
    registry.allocate(REGULATOR, "AL-25", "BANK", CEA25, 20_000, "2025", source="CN-ISSUANCE")
    registry.allocate(REGULATOR, "AL-T24", "TRADER", CEA24, 50_000, "2024", source="CN-ISSUANCE")
    sold = registry.settle_trades(
        EXCHANGE,
        [
            Trade("T-1", "BANK", "TRADER", "CEA", 30_000, 2024),
            Trade("T-2", "BANK", "TRADER", "CEA", 20_000, 2024),
        ],
    )
    assert [r.reason for r in sold] == ["", ""]
    registry.place_hold(EXCHANGE, "H-3", "TRADER", CEA24, 12_000, 3_600)
    bought = registry.settle_trade(
        EXCHANGE, Trade("T-3", "TRADER", "BANK", "CEA", 10_000, 2024, hold_id="H-3")
    )
    assert bought.refusal_reason == ""
    return registry


def held(registry: Registry, vintage: int) -> int:
    return sum(
        h.total
        for h in registry.get_holdings("BANK")
        if h.unit_class == UnitClass(UnitType.CEA, vintage)
    )


def surrendered(registry: Registry, year: int) -> int:
    return registry.get_surrendered("BANK", year).get("CEA", 0)


def used(registry: Registry) -> int:
    use = UnitOfWork(registry).find(CarryOverUse.id_for("BANK"), CarryOverUse)
    scope = net_sales_rules().carry_over_scope
    return 0 if use is None or scope is None else use.used(scope)


def versions(registry: Registry) -> list[int]:
    """The versions of what a surrender of BANK's would change (0: not there)."""
    uow = UnitOfWork(registry)
    found = [
        uow.find(ComplianceObligation.id_for("BANK", 2025), ComplianceObligation),
        uow.find(CarryOverUse.id_for("BANK"), CarryOverUse),
        uow.account("BANK"),
        uow.account("CN-SURRENDER"),
    ]
    return [0 if aggregate is None else aggregate.version for aggregate in found]


def test_a_banker_at_the_carry_over_limit(registry: Registry) -> None:
    """Net sales 40,000 t: limit 1.5 x 40,000 + 10,000 = 60,000 + 10,000 = 70,000 t of
    2019-2024 vintages for 2025. 70,001 t is refused and changes nothing; 40,000 t and
    then 30,000 t pass (40,000 + 30,000 = 70,000, exactly the limit); 1 t more is
    refused. 2025 allowances are not carried: 20,000 t of them still pass."""
    banker(registry)
    registry.set_compliance_rules(REGULATOR, 2025, "POWER", net_sales_rules(), "plan 2023-2024")

    before = versions(registry)
    over = registry.surrender(REGULATOR, "S-OVER", "BANK", CEA24, 70_001, 2025, "too much")
    assert over.refusal_reason == "CARRY_OVER_LIMIT_EXCEEDED"
    assert "70000 t" in over.refusal_message and "net sales of 40000 t" in over.refusal_message
    assert "0 t already carried" in over.refusal_message and "70001 t" in over.refusal_message
    assert (held(registry, 2024), surrendered(registry, 2025), used(registry)) == (110_000, 0, 0)
    assert versions(registry) == before  # the refusal changed no aggregate

    assert surrender(registry, "S-1", 40_000) == ""
    assert surrender(registry, "S-2", 30_000) == ""
    assert (held(registry, 2024), surrendered(registry, 2025), used(registry)) == (
        40_000,
        70_000,
        70_000,
    )
    one_more = registry.surrender(REGULATOR, "S-3", "BANK", CEA24, 1, 2025, "one more")
    assert one_more.refusal_reason == "CARRY_OVER_LIMIT_EXCEEDED"
    assert "70000 t already carried" in one_more.refusal_message
    assert surrender(registry, "S-4", 20_000, selector=CEA25) == ""
    # a retry of a surrender is a replay: nothing counted twice
    assert registry.surrender(REGULATOR, "S-2", "BANK", CEA24, 30_000, 2025, "compliance").replayed
    assert (surrendered(registry, 2025), used(registry)) == (90_000, 70_000)
    assert_conserved(registry)


def test_a_second_year_draws_on_what_the_first_left(registry: Registry) -> None:
    """The pool is one for every year under the same limit (same period, vintages up
    to 2024). 30,000 t carried for 2025 leave 70,000 - 30,000 = 40,000 t for 2026:
    40,001 t is refused, 40,000 t pass, and then nothing is left for either year."""
    banker(registry)
    for year in (2025, 2026):
        registry.set_compliance_rules(REGULATOR, year, "POWER", net_sales_rules(), "plan")
    assert surrender(registry, "S-25", 30_000) == ""
    refused = registry.surrender(REGULATOR, "S-26-OVER", "BANK", CEA24, 40_001, 2026, "over")
    assert refused.refusal_reason == "CARRY_OVER_LIMIT_EXCEEDED"
    assert "30000 t already carried" in refused.refusal_message
    assert surrender(registry, "S-26", 40_000, year=2026) == ""
    assert surrender(registry, "S-25-MORE", 1) == "CARRY_OVER_LIMIT_EXCEEDED"
    assert (surrendered(registry, 2025), surrendered(registry, 2026), used(registry)) == (
        30_000,
        40_000,
        70_000,
    )


def test_a_reversed_surrender_gives_its_carried_tonnes_back(registry: Registry) -> None:
    """70,000 t carried for 2025 (20,000 + 50,000) use the whole limit; reversing the
    50,000 t surrender gives them back: 70,000 - 20,000 = 50,000 t may be carried
    again, for 2026 too (50,000 pass, then 1 t is refused)."""
    banker(registry)
    for year in (2025, 2026):
        registry.set_compliance_rules(REGULATOR, year, "POWER", net_sales_rules(), "plan")
    assert surrender(registry, "S-A", 20_000) == ""
    assert surrender(registry, "S-B", 50_000) == ""
    assert surrender(registry, "S-C", 1, year=2026) == "CARRY_OVER_LIMIT_EXCEEDED"
    reversal = registry.reverse(REGULATOR, "REV-B", "mee", "S-B", "surrendered by mistake")
    assert reversal.refusal_reason == ""
    assert (held(registry, 2024), surrendered(registry, 2025), used(registry)) == (
        90_000,
        20_000,
        20_000,
    )
    assert surrender(registry, "S-D", 50_000, year=2026) == ""
    assert surrender(registry, "S-E", 1, year=2026) == "CARRY_OVER_LIMIT_EXCEEDED"
    assert used(registry) == 70_000


def test_net_sales_outside_the_period_do_not_count(registry: Registry) -> None:
    """The shipped period, 2019-01-01..2024-12-31, is over: today's settlements are not
    in it, so net sales are 0 and the limit is b alone, 10,000 t."""
    banker(registry)
    registry.set_compliance_rules(
        REGULATOR, 2025, "POWER", net_sales_rules("2019-01-01", "2024-12-31"), "shipped period"
    )
    over = registry.surrender(REGULATOR, "S-OVER", "BANK", CEA24, 10_001, 2025, "over")
    assert over.refusal_reason == "CARRY_OVER_LIMIT_EXCEEDED"
    assert "net sales of 0 t" in over.refusal_message
    assert surrender(registry, "S-OK", 10_000) == ""


def test_a_store_written_before_carried_tonnes_were_recorded(registry: Registry) -> None:
    """A surrender of carried vintages made before this version recorded them left only
    its transaction, the account's debit and the obligation's ``UnitsSurrendered`` (the
    events written under a rule that did not limit it, as the previous version wrote
    every surrender). It still counts: the first surrender judged under the limit
    computes it from the surrendered blocks. 45,000 t then; 70,000 - 45,000 = 25,000
    t remain: 25,001 refused, 25,000 pass, and the old one is recorded too."""
    banker(registry)
    assert surrender(registry, "S-OLD", 45_000) == ""  # 2025 rules: the default, unlimited
    uow = UnitOfWork(registry)
    assert uow.find(CarryOverUse.id_for("BANK"), CarryOverUse) is None
    old = uow.find(ComplianceObligation.id_for("BANK", 2025), ComplianceObligation)
    assert old is not None and old.surrendered == {"CEA": 45_000}  # the old events load
    registry.set_compliance_rules(REGULATOR, 2025, "POWER", net_sales_rules(), "plan")

    assert surrender(registry, "S-NEW", 25_001) == "CARRY_OVER_LIMIT_EXCEEDED"
    assert surrender(registry, "S-NEW-2", 25_000) == ""
    use = UnitOfWork(registry).find(CarryOverUse.id_for("BANK"), CarryOverUse)
    assert use is not None
    assert sorted(s["tonnes"] for s in use.surrenders.values()) == [25_000, 45_000]
    assert used(registry) == 70_000


@pytest.fixture(params=["sqlite", "postgres"])
def projected(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Registry, str]]:
    """A registry with its read models, on a database."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        with fresh_pg_database() as url:
            yield build_registry(Settings(url)), url
    else:
        url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
        yield build_registry(Settings(url)), url


def test_the_write_side_net_sales_equal_the_read_model(projected: tuple[Registry, str]) -> None:
    """On the same history (sales 30,000 + 20,000, a purchase of 10,000 through a hold,
    a transfer and a surrender that are not settlements, and a reversed sale which is
    not netted out): both give 50,000 + 5,000 - 10,000 = 45,000 t for BANK and
    10,000 - 55,000 = -45,000 t for TRADER."""
    registry, url = projected
    try:
        banker(registry)
        registry.set_compliance_rules(REGULATOR, 2025, "POWER", net_sales_rules(), "plan")
        assert registry.settle_trade(EXCHANGE, Trade("T-4", "BANK", "TRADER", "CEA", 5_000, 2024))
        registry.reverse(REGULATOR, "REV-4", "exchange", "T-4", "wrong counterparty")
        registry.transfer(REGULATOR, "X-1", "BANK", "TRADER", CEA24, 1_000, "not a sale")
        assert surrender(registry, "S-1", 1_000) == ""
        window = net_sales_rules().net_sales_window()
        assert window is not None
        engine = make_engine(Settings(url))
        try:
            ProjectionRunner(registry, engine, batch_size=7).catch_up()
            read = ReadModels(engine)
            for account, expected in (("BANK", 45_000), ("TRADER", -45_000)):
                written = net_sales(account, account_transactions(registry, account), *window)
                assert written == read.net_sales(account, *window) == expected
        finally:
            engine.dispose()
    finally:
        registry.close()

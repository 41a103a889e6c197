"""Queries served from the read models, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from registry.application import Registry, Trade
from registry.bootstrap import build_registry
from registry.cli.demo import EXCHANGE, run_demo
from registry.domain.errors import InvalidCommand, UnknownAccount, UnknownTransaction
from registry.domain.units import UnitClass
from registry.persistence.engine import make_engine
from registry.readmodels.queries import ReadModels
from registry.readmodels.runner import ProjectionRunner, ReadModelTimeout
from registry.settings import Settings
from tests.support import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def played(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Registry, ReadModels]]:
    """The demo's national year, projected."""

    def build(url: str) -> Iterator[tuple[Registry, ReadModels]]:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            assert run_demo(registry, out=lambda _: None)
            ProjectionRunner(registry, engine, batch_size=17).catch_up()
            yield registry, ReadModels(engine)
        finally:
            engine.dispose()
            registry.close()

    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        with fresh_pg_database() as url:
            yield from build(url)
    else:
        yield from build(f"sqlite:///{tmp_path / 'registry.sqlite'}")


def test_balances_equal_the_aggregates(played: tuple[Registry, ReadModels]) -> None:
    registry, read = played
    for account_id in registry.account_ids():
        expected = {
            (h.unit_class.key, h.total, h.held, h.available)
            for h in registry.get_holdings(account_id)
            if h.total
        }
        actual = {
            (r["unit_class"], r["total"], r["held"], r["available"])
            for r in read.holdings(account_id)
        }
        assert actual == expected, account_id
    with pytest.raises(UnknownAccount):
        read.holdings("NOPE-001")


def test_history_pages_and_filters(played: tuple[Registry, ReadModels]) -> None:
    _, read = played
    everything = read.history("TRD-SH-0001", page_size=1000)
    assert everything.next_token == ""
    kinds = [r["kind"] for r in everything.rows]
    assert kinds.count("SETTLEMENT") == 3 and "CANCELLATION" in kinds
    paged, token = [], ""
    while True:
        page = read.history("TRD-SH-0001", page_size=2, page_token=token)
        paged.extend(page.rows)
        token = page.next_token
        if not token:
            break
    assert paged == everything.rows
    positions = [r["position"] for r in paged]
    assert positions == sorted(positions)
    credits = sum(r["quantity"] for r in paged if r["direction"] == "CREDIT")
    debits = sum(r["quantity"] for r in paged if r["direction"] == "DEBIT")
    assert credits - debits == sum(h["total"] for h in read.holdings("TRD-SH-0001"))
    surrenders = read.history("PWR-SD-0001", kinds=["SURRENDER"]).rows
    assert [(r["quantity"], r["unit_type"]) for r in surrenders] == [
        (8_700_000, "CEA"),
        (120_000, "CCER"),
    ]
    ccer = read.history("PWR-SD-0001", unit_class="CCER/2024/CCER-2024-0117").rows
    assert [r["direction"] for r in ccer] == ["CREDIT", "DEBIT"]
    first = everything.rows[0]["recorded_at"]
    assert read.history("TRD-SH-0001", until=first).rows == []
    assert read.history("TRD-SH-0001", since=first - timedelta(seconds=1)).rows == paged
    with pytest.raises(InvalidCommand) as raised:
        read.history("TRD-SH-0001", page_token="not-a-token")
    assert raised.value.reason == "INVALID_PAGE_TOKEN"


def test_transactions_including_refusals(played: tuple[Registry, ReadModels]) -> None:
    _, read = played
    refused = read.transaction("shanghai-exchange", "SEEE-20260616-000001")
    assert (refused["status"], refused["refusal_reason"]) == ("REFUSED", "INSUFFICIENT_UNITS")
    settled = read.transaction("shanghai-exchange", "SEEE-20260615-000101")
    assert (settled["status"], settled["quantity"]) == ("COMPLETED", 600_000)
    with pytest.raises(UnknownTransaction):
        read.transaction("shanghai-exchange", "never")


def test_supply_serials_and_directory(played: tuple[Registry, ReadModels]) -> None:
    registry, read = played
    supply = read.supply()
    for line in registry.supply():
        row = supply[line.unit_class.key]
        assert row["issued"] == line.issued
        assert sum(v["total"] for v in row["by_account_type"].values()) == line.issued
    cea = supply["CEA/2025"]["by_account_type"]
    assert cea["SURRENDER"]["total"] == 8_700_000 and cea["CANCELLATION"]["total"] == 10_000
    assert cea["COMPLIANCE"]["held"] == 300_000
    cea_class = UnitClass.from_key("CEA/2025")
    for serial in (1, 9_200_001, 9_420_001, 33_700_001, 62_700_000):
        assert (
            read.locate_serial("CEA/2025", serial) == registry.locate_serial(cea_class, serial)[0]
        )
    chain = [(r["source"], r["destination"]) for r in read.trace_serial("CEA/2025", 9_200_001)]
    assert chain == [
        (None, "CN-ISSUANCE"),
        ("CN-ISSUANCE", "CN-ALLOCATION-RESERVE"),
        ("CN-ALLOCATION-RESERVE", "PWR-NM-0002"),
        ("PWR-NM-0002", "TRD-SH-0001"),
        ("TRD-SH-0001", "CEM-AH-0001"),
    ]
    power = read.accounts(account_type="COMPLIANCE", sector="POWER").rows
    assert [r["account_id"] for r in power] == ["PWR-NM-0002", "PWR-SD-0001"]
    first = read.accounts(page_size=5)
    rest = read.accounts(page_size=100, page_token=first.next_token)
    assert len(first.rows) == 5 and len(first.rows) + len(rest.rows) == 11


def test_read_your_writes_from_any_process(played: tuple[Registry, ReadModels]) -> None:
    registry, read = played
    result = registry.settle_trade(EXCHANGE, Trade("RYW-1", "TRD-SH-0001", "PWR-SD-0001", "CEA", 5))
    with pytest.raises(ReadModelTimeout, match="registry project"):
        read.wait_for(result.position, timeout=0.2)  # nobody is projecting yet
    ProjectionRunner(registry, read.engine).catch_up()
    read.wait_for(result.position, timeout=0.2)
    assert read.transaction("shanghai-exchange", "RYW-1")["quantity"] == 5

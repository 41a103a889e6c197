"""Transfers outside the exchange through the application, on every backend (PostgreSQL
included): an operator's between one holder's accounts, and court-order, merger, split
and exchange-correction transfers carried out by an approved proposal. Units are
conserved after every step; refusals are recorded and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from registry.application import Registry
from registry.bootstrap import build_registry
from registry.domain.accounts import AccountType, Holder
from registry.domain.errors import InvalidCommand, TransactionExistsWithDifferentContent
from registry.domain.proposals import ProposalStatus
from registry.domain.transactions import Principal, TransactionKind, TransactionStatus
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.persistence.engine import make_engine
from registry.readmodels.check import reconcile
from registry.readmodels.queries import ReadModels
from registry.readmodels.runner import ProjectionRunner
from registry.settings import Settings
from tests.support import REGULATOR, assert_conserved, fresh_pg_database, register_project

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
DESK = Principal("sdpower", "desk")
CEA = UnitSelector(UnitType.CEA)
CCER = UnitSelector(UnitType.CCER)
SDPOWER = "91370000163060000K"
HUANENG = "91110000100001234X"


def held(registry: Registry, account_id: str) -> int:
    return sum(h.total for h in registry.get_holdings(account_id))


@pytest.fixture
def holders(registry: Registry) -> Registry:
    return seed_holders(registry)


def seed_holders(registry: Registry) -> Registry:
    """Shandong Power: a compliance, a trading and a project account (one credit code);
    Huaneng: a compliance account; a trader with no credit code recorded. 100 CEA and
    40 CCER of project P-1 (registered to Shandong Power's project account, issued there
    and transferred on) in Shandong Power's compliance account."""
    sd = ("Shandong Power Co.", SDPOWER)
    for account_id, account_type, holder in (
        ("CMP-SD", AccountType.COMPLIANCE, Holder(*sd, "POWER", "Shandong")),
        ("TRD-SD", AccountType.TRADING, Holder(*sd)),
        ("PRJ-SD", AccountType.PROJECT, Holder(*sd)),
        ("CMP-HN", AccountType.COMPLIANCE, Holder("Huaneng Co.", HUANENG, "POWER", "Beijing")),
        ("TRD-X", AccountType.TRADING, Holder("Shandong Power Co.")),
    ):
        registry.open_account(REGULATOR, account_id, account_type, holder)
    registry.issue_units(REGULATOR, "ISS-CEA", UnitClass(UnitType.CEA, 2025), 100, "")
    register_project(registry, "P-1", "PRJ-SD")
    registry.issue_units(REGULATOR, "ISS-CCER", UnitClass(UnitType.CCER, 2024, "P-1"), 40, "")
    registry.transfer(REGULATOR, "T-CEA", "CN-ISSUANCE", "CMP-SD", CEA, 100, "")
    registry.transfer(REGULATOR, "T-CCER", "PRJ-SD", "CMP-SD", CCER, 40, "")
    return registry


def test_an_operator_moves_units_between_its_holder_s_accounts(holders: Registry) -> None:
    registry = holders
    moved = registry.transfer_units(
        DESK, "MOVE-1", "CMP-SD", "TRD-SD", CEA, 30, "to the trading desk", "DESK-7"
    )
    assert moved.ok and moved.kind is TransactionKind.HOLDER_TRANSFER
    assert (moved.source, moved.destination, moved.quantity) == ("CMP-SD", "TRD-SD", 30)
    assert moved.reference == "DESK-7" and moved.reason == "to the trading desk"
    assert [(b.first, b.last) for b in moved.blocks] == [(1, 30)]  # FIFO: lowest serials
    assert (held(registry, "CMP-SD"), held(registry, "TRD-SD")) == (110, 30)
    recorded = registry.get_transaction("sdpower", "MOVE-1")
    assert recorded.principal == "sdpower/desk" and recorded.details["reference"] == "DESK-7"
    assert_conserved(registry)

    again = registry.transfer_units(
        DESK, "MOVE-1", "CMP-SD", "TRD-SD", CEA, 30, "to the trading desk", "DESK-7"
    )
    assert again.replayed and held(registry, "TRD-SD") == 30
    with pytest.raises(TransactionExistsWithDifferentContent):
        registry.transfer_units(
            DESK, "MOVE-1", "CMP-SD", "TRD-SD", CEA, 30, "to the trading desk", "DESK-8"
        )


def test_a_transfer_to_another_holder_is_refused_and_recorded(holders: Registry) -> None:
    registry = holders
    refused = registry.transfer_units(DESK, "MOVE-2", "CMP-SD", "CMP-HN", CEA, 10, "gift")
    assert refused.status is TransactionStatus.REFUSED
    assert refused.refusal_reason == "DIFFERENT_HOLDER"
    assert refused.refusal_metadata["destination_holder"] == HUANENG
    # the same name but no credit code recorded: not established as the same holder
    nameless = registry.transfer_units(DESK, "MOVE-3", "CMP-SD", "TRD-X", CEA, 10, "desk")
    assert nameless.refusal_reason == "DIFFERENT_HOLDER"
    assert (held(registry, "CMP-SD"), held(registry, "CMP-HN"), held(registry, "TRD-X")) == (
        140,
        0,
        0,
    )
    retry = registry.transfer_units(DESK, "MOVE-2", "CMP-SD", "CMP-HN", CEA, 10, "gift")
    assert retry.replayed and retry.refusal_reason == "DIFFERENT_HOLDER"
    assert_conserved(registry)


def test_restrictions_and_the_table_refuse_a_holder_transfer(holders: Registry) -> None:
    registry = holders
    to_project = registry.transfer_units(DESK, "MOVE-4", "CMP-SD", "PRJ-SD", CEA, 1, "x")
    assert to_project.refusal_reason == "MOVEMENT_NOT_ALLOWED"
    registry.proposals.propose(
        LI, "P-DET", "ORIGIN_DETENTION", {"project": "P-1", "reference": "C-9", "reason": "r"}, "r"
    )
    registry.proposals.approve(WANG, "mee", "P-DET")
    detained = registry.transfer_units(DESK, "MOVE-5", "CMP-SD", "TRD-SD", CCER, 1, "x")
    assert detained.refusal_reason == "ORIGIN_DETAINED"
    registry.freeze_account(REGULATOR, "CMP-SD", "court freeze")
    frozen = registry.transfer_units(DESK, "MOVE-6", "CMP-SD", "TRD-SD", CEA, 1, "x")
    assert frozen.refusal_reason == "ACCOUNT_FROZEN"
    assert held(registry, "TRD-SD") == 0 and held(registry, "CMP-SD") == 140
    assert_conserved(registry)


def ordered(kind: str, transaction_id: str, source: str, destination: str, **extra: Any) -> dict:
    return {
        "transaction_id": transaction_id,
        "source_account": source,
        "destination_account": destination,
        "unit_type": "CEA",
        "quantity": 25,
        "reason": f"{kind.lower()} for the record",
        "reference": "(2026) Lu 01 Zhi 88",
    } | extra


def test_a_court_order_moves_units_between_holders_once_a_second_regulator_approves(
    holders: Registry,
) -> None:
    registry = holders
    payload = ordered("COURT_ORDER_TRANSFER", "CO-1", "CMP-SD", "CMP-HN")
    proposed = registry.proposals.propose(LI, "P-CO", "COURT_ORDER_TRANSFER", payload, "judgment")
    assert proposed.proposal.status is ProposalStatus.PENDING
    assert held(registry, "CMP-HN") == 0  # nothing before the second pair of eyes

    done = registry.proposals.approve(WANG, "mee", "P-CO").proposal
    assert (done.status, done.result) == (ProposalStatus.EXECUTED, "mee:CO-1")
    txn = registry.get_transaction("mee", "CO-1")
    assert txn.kind is TransactionKind.COURT_ORDER_TRANSFER
    assert (txn.reference, txn.principal) == ("(2026) Lu 01 Zhi 88", "mee/regulator-wang")
    assert (held(registry, "CMP-SD"), held(registry, "CMP-HN")) == (115, 25)
    assert_conserved(registry)
    assert registry.proposals.approve(WANG, "mee", "P-CO").replayed
    assert held(registry, "CMP-HN") == 25  # approving again moves nothing twice

    # a transfer is reversible like any movement
    registry.reverse(REGULATOR, "REV-CO-1", "mee", "CO-1", "judgment set aside")
    assert (held(registry, "CMP-SD"), held(registry, "CMP-HN")) == (140, 0)
    assert_conserved(registry)


def test_each_ordered_kind_reaches_the_account_types_of_the_table(holders: Registry) -> None:
    registry = holders
    merger = ordered("MERGER_TRANSFER", "MG-1", "CMP-SD", "PRJ-SD", quantity=10)
    registry.proposals.propose(LI, "P-MG", "MERGER_TRANSFER", merger, "merger decision")
    assert registry.proposals.approve(WANG, "mee", "P-MG").proposal.status is (
        ProposalStatus.EXECUTED
    )
    court = ordered("COURT_ORDER_TRANSFER", "CO-2", "CMP-SD", "PRJ-SD", quantity=10)
    registry.proposals.propose(LI, "P-CO2", "COURT_ORDER_TRANSFER", court, "judgment")
    failed = registry.proposals.approve(WANG, "mee", "P-CO2").proposal
    assert (failed.status, failed.failure_reason) == (ProposalStatus.FAILED, "MOVEMENT_NOT_ALLOWED")
    split = ordered("SPLIT_TRANSFER", "SP-1", "CMP-SD", "CMP-HN", quantity=5)
    registry.proposals.propose(LI, "P-SP", "SPLIT_TRANSFER", split, "split decision")
    registry.proposals.approve(WANG, "mee", "P-SP")
    fix = ordered("EXCHANGE_CORRECTION", "EC-1", "CMP-HN", "TRD-SD", quantity=5)
    registry.proposals.propose(LI, "P-EC", "EXCHANGE_CORRECTION", fix, "ticket SZ-7")
    registry.proposals.approve(WANG, "mee", "P-EC")
    kinds = {t: registry.get_transaction("mee", t).kind.value for t in ("MG-1", "SP-1", "EC-1")}
    assert kinds == {
        "MG-1": "MERGER_TRANSFER",
        "SP-1": "SPLIT_TRANSFER",
        "EC-1": "EXCHANGE_CORRECTION",
    }
    assert [held(registry, a) for a in ("CMP-SD", "PRJ-SD", "CMP-HN", "TRD-SD")] == [
        125,
        10,
        0,
        5,
    ]
    assert_conserved(registry)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"reference": ""}, "INVALID_PAYLOAD", "payload.reference"),
        ({"reference": "x" * 201}, "INVALID_REFERENCE", "payload.reference"),
        ({"destination_account": "bad id"}, "INVALID_ACCOUNT_ID", "payload.destination_account"),
        ({"destination_account": "CMP-SD"}, "SAME_ACCOUNT", "payload"),
        ({"quantity": 0}, "QUANTITY_NOT_POSITIVE", "payload.quantity"),
    ],
)
def test_a_malformed_transfer_is_refused_when_proposed(
    holders: Registry, change: dict[str, Any], reason: str, field: str
) -> None:
    payload = ordered("COURT_ORDER_TRANSFER", "CO-9", "CMP-SD", "CMP-HN") | change
    with pytest.raises(InvalidCommand) as refused:
        holders.proposals.propose(LI, "P-BAD", "COURT_ORDER_TRANSFER", payload, "x")
    assert (refused.value.reason, refused.value.metadata.get("field")) == (reason, field)
    assert holders.proposals.list_proposals() == []


@pytest.fixture(params=["sqlite", "postgres"])
def projected(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Registry, Engine]]:
    """A registry with its read models' engine, on SQLite and on PostgreSQL."""

    def build(url: str) -> Iterator[tuple[Registry, Engine]]:
        settings = Settings(url)
        registry = build_registry(settings)
        engine = make_engine(settings)
        try:
            yield registry, engine
        finally:
            engine.dispose()
            registry.close()

    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
        with fresh_pg_database() as url:
            yield from build(url)
    else:
        yield from build(f"sqlite:///{tmp_path / 'registry.sqlite'}")


def test_the_read_models_project_transfers_with_their_kind_and_reference(
    projected: tuple[Registry, Engine],
) -> None:
    registry, engine = projected
    seed_holders(registry)
    registry.transfer_units(DESK, "MOVE-1", "CMP-SD", "TRD-SD", CEA, 30, "desk", "DESK-7")
    registry.transfer_units(DESK, "MOVE-2", "CMP-SD", "CMP-HN", CEA, 5, "gift")  # refused
    payload = ordered("COURT_ORDER_TRANSFER", "CO-1", "TRD-SD", "CMP-HN")
    registry.proposals.propose(LI, "P-CO", "COURT_ORDER_TRANSFER", payload, "judgment")
    registry.proposals.approve(WANG, "mee", "P-CO")
    ProjectionRunner(registry, engine, batch_size=3).catch_up()
    assert reconcile(registry, engine) == []

    models = ReadModels(engine)
    rows = models.history("TRD-SD").rows
    assert [(r["client_id"], r["kind"], r["direction"], r["reference"]) for r in rows] == [
        ("MOVE-1", "HOLDER_TRANSFER", "CREDIT", "DESK-7"),
        ("CO-1", "COURT_ORDER_TRANSFER", "DEBIT", "(2026) Lu 01 Zhi 88"),
    ]
    settled = models.history("CMP-SD", kinds=["ALLOCATION", "TRANSFER"]).rows
    assert settled and all(r["reference"] == "" for r in settled)
    refused = models.transaction("sdpower", "MOVE-2")
    assert (refused["status"], refused["refusal_reason"]) == ("REFUSED", "DIFFERENT_HOLDER")
    assert [models.holdings(a)[0]["total"] for a in ("TRD-SD", "CMP-HN")] == [5, 25]

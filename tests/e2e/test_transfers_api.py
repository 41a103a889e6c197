"""Transfers outside the exchange over a real gRPC channel, on SQLite and PostgreSQL: an
operator's transfer between one holder's accounts (and its refusals), a court-ordered
transfer between holders through a regulator's proposal approved by a second one, and
what the audit trail shows of them; `registry transfer` against the same server."""

from __future__ import annotations

import json

import pytest

from registry.cli.app import main
from registry.client import UnitsSpec
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from tests.e2e.conftest import PRECONDITION, Api, rpc_error
from tests.e2e.market import balance, caught_up, open_account, seed_market

SAME = "PWR-SD-0001", "PWR-SD-0002"
"""Two compliance accounts of one holder (seed_market opens both under one credit code),
with 100,000 and 50,000 CEA/2025."""
OTHER = "PWR-GD-0001"
"""Another holder's compliance account (another credit code), also operated."""
UNITS = UnitsSpec("CEA", 1_000, 2025)
PERMISSION = "PERMISSION_DENIED"


@pytest.fixture
def seeded(api: Api) -> Api:
    seed_market(api.regulator)
    open_account(
        api.regulator,
        OTHER,
        common.ACCOUNT_TYPE_COMPLIANCE,
        common.Holder(
            name="Guangdong Power Co.",
            credit_code="91440000190352575W",
            sector=common.SECTOR_POWER,
            province="Guangdong",
        ),
    )
    return api


def movements(api: Api, account_id: str, position: int) -> list[account_pb.AccountMovement]:
    api.operator.balances(account_id, min_position=position)  # read after the write
    return list(api.operator.transactions(account_id))


def test_an_operator_transfers_between_its_holder_s_accounts_once(seeded: Api) -> None:
    op = seeded.operator
    moved = op.transfer_units("MOVE-1", *SAME, UNITS, "consolidate holdings", "DESK-7")
    t = moved.transaction
    assert not moved.replayed and t.kind == common.TRANSACTION_KIND_HOLDER_TRANSFER
    assert (t.source_account, t.destination_account, t.quantity) == (*SAME, 1_000)
    assert (t.reason, t.reference, t.principal) == (
        "consolidate holdings",
        "DESK-7",
        "huaneng/operator-wang",
    )
    assert balance(op, SAME[0], t.position) == 99_000
    assert balance(op, SAME[1], t.position) == 51_000

    replay = op.transfer_units("MOVE-1", *SAME, UNITS, "consolidate holdings", "DESK-7")
    assert replay.replayed and replay.transaction.position == 0
    assert balance(op, SAME[1], caught_up(op)) == 51_000  # nothing moved twice

    [credit] = [m for m in movements(seeded, SAME[1], t.position) if m.transaction_id == "MOVE-1"]
    assert (credit.kind, credit.direction, credit.reason, credit.reference) == (
        common.TRANSACTION_KIND_HOLDER_TRANSFER,
        account_pb.DIRECTION_CREDIT,
        "consolidate holdings",
        "DESK-7",
    )
    kinds = account_pb.ListTransactionsRequest(
        account_id=SAME[0], kinds=[common.TRANSACTION_KIND_HOLDER_TRANSFER]
    )
    listed = op.call(op.accounts.ListTransactions, kinds).movements
    assert [(m.transaction_id, m.direction) for m in listed] == [
        ("MOVE-1", account_pb.DIRECTION_DEBIT)
    ]


def test_a_transfer_to_another_holder_or_from_a_frozen_account_is_refused(seeded: Api) -> None:
    op, reg = seeded.operator, seeded.regulator
    other = rpc_error(lambda: op.transfer_units("MOVE-2", SAME[0], OTHER, UNITS, "gift"))
    assert (other.code, other.reason) == (PRECONDITION, "DIFFERENT_HOLDER")
    assert other.metadata["transaction"] == "huaneng:MOVE-2"
    again = rpc_error(lambda: op.transfer_units("MOVE-2", SAME[0], OTHER, UNITS, "gift"))
    assert again.reason == "DIFFERENT_HOLDER"  # the refusal is recorded: a retry gets it

    not_mine = rpc_error(lambda: op.transfer_units("MOVE-3", "PWR-ZJ-0001", SAME[0], UNITS, "x"))
    assert (not_mine.code.name, not_mine.reason) == (PERMISSION, "ACCOUNT_NOT_IN_SCOPE")
    regulator = rpc_error(lambda: reg.transfer_units("MOVE-4", *SAME, UNITS, "x"))
    assert (regulator.code.name, regulator.reason) == (PERMISSION, "ROLE_NOT_GRANTED")

    reg.call(
        reg.administration.FreezeAccount,
        admin_pb.FreezeAccountRequest(
            account_id=SAME[0], reason="court freeze", request_id="FRZ-1"
        ),
    )
    frozen = rpc_error(lambda: op.transfer_units("MOVE-5", *SAME, UNITS, "consolidate"))
    assert (frozen.code, frozen.reason) == (PRECONDITION, "ACCOUNT_FROZEN")
    position = caught_up(op)
    assert [balance(op, a, position) for a in (*SAME, OTHER)] == [100_000, 50_000, 0]


def test_a_court_order_moves_units_between_holders_after_a_second_regulator_approves(
    seeded: Api,
) -> None:
    li, wang, auditor = seeded.regulator, seeded.clients["regulator2"], seeded.auditor
    proposed = li.propose_transfer(
        "COURT_ORDER_TRANSFER",
        "P-CO-1",
        "CO-2026-17",
        SAME[0],
        OTHER,
        UnitsSpec("CEA", 2_500, 2025),
        "enforcement of a judgment",
        "(2026) Yue 01 Zhi 123",
    )
    assert proposed.proposal.status == admin_pb.PROPOSAL_STATUS_PENDING
    assert proposed.proposal.kind == admin_pb.PROPOSAL_KIND_COURT_ORDER_TRANSFER
    assert balance(li, OTHER, caught_up(li)) == 0

    own = rpc_error(
        lambda: li.call(
            li.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-CO-1"),
        )
    )
    assert own.reason == "SELF_APPROVAL_FORBIDDEN"
    approved = wang.call(
        wang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-CO-1"),
    ).proposal
    assert (approved.status, approved.result) == (
        admin_pb.PROPOSAL_STATUS_EXECUTED,
        "mee:CO-2026-17",
    )
    position = caught_up(li)
    assert (balance(li, SAME[0], position), balance(li, OTHER, position)) == (97_500, 2_500)

    [credit] = movements(seeded, OTHER, position)
    assert (credit.kind, credit.reference, credit.principal, credit.counterparty_account) == (
        common.TRANSACTION_KIND_COURT_ORDER_TRANSFER,
        "(2026) Yue 01 Zhi 123",
        "mee/regulator-wang",
        SAME[0],
    )
    events = [
        json.loads(e.payload_json)
        for e in auditor.stream_events(event_types=["registry.Transaction.Completed"])
    ]
    [ordered] = [e for e in events if e["client_id"] == "CO-2026-17"]
    assert (ordered["kind"], ordered["reason"], ordered["details"]["reference"]) == (
        "COURT_ORDER_TRANSFER",
        "enforcement of a judgment",
        "(2026) Yue 01 Zhi 123",
    )
    supply = auditor.call(auditor.audit.GetSupply, audit_pb.GetSupplyRequest()).lines
    assert supply and all(line.balanced for line in supply)


def test_registry_transfer_moves_and_proposes(
    seeded: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", seeded.address]
    operator = [*server, "--token", seeded.tokens["operator"]]
    moved = main(["transfer", *SAME, "700", "--id", "CLI-1", "--reason", "desk", *operator])
    out = capsys.readouterr().out
    assert moved == 0 and "huaneng:CLI-1 moved 700 CEA from PWR-SD-0001 to PWR-SD-0002" in out
    assert main(["transfer", *SAME, "700", "--id", "CLI-1", "--reason", "desk", *operator]) == 0
    assert "(already recorded)" in capsys.readouterr().out

    refused = main(["transfer", SAME[0], OTHER, "1", "--id", "CLI-2", "--reason", "x", *operator])
    assert refused == 6 and "DIFFERENT_HOLDER" in capsys.readouterr().err

    regulator = [*server, "--token", seeded.tokens["regulator"]]
    args = ["transfer", SAME[0], OTHER, "5", "--id", "MG-1", "--reason", "merger"]
    bare = main([*args, "--kind", "MERGER_TRANSFER", *regulator])
    assert bare == 2 and "give --propose PROPOSAL_ID" in capsys.readouterr().err
    at_once = main([*args, "--propose", "P-X", *regulator])  # a holder transfer: no proposal
    assert at_once == 2 and "takes effect at once" in capsys.readouterr().err
    proposed = main(
        [*args, "--kind", "MERGER_TRANSFER", "--propose", "P-MG", "--reference", "D-9", *regulator]
    )
    out = capsys.readouterr().out
    assert proposed == 0 and "proposed mee:P-MG: MERGER_TRANSFER of 5 CEA" in out
    view = seeded.regulator.call(
        seeded.regulator.administration.GetProposal,
        admin_pb.GetProposalRequest(party="mee", proposal_id="P-MG"),
    ).proposal
    assert view.kind == admin_pb.PROPOSAL_KIND_MERGER_TRANSFER
    assert json.loads(view.payload_json)["reference"] == "D-9"

"""Origin detention with rebuttal through the gRPC API (docs/origins.md): a project is
detained; its units, spread over five accounts by trades, are refused everywhere; one
holder rebuts and is cleared, another does not answer; the confirmation cancels exactly
the detained units, and a company that surrendered some owes them again. Conservation
(GetSupply) holds after every step."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from registry.cli.app import main
from registry.client import RegistryClient
from registry.domain.access import Role
from registry.domain.transactions import Principal
from registry.readmodels.check import reconcile
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import PRECONDITION, Api, rpc_error
from tests.e2e.market import (
    caught_up,
    emissions,
    issue,
    open_company,
    open_trader,
    record_emissions,
    register_project,
)

PROJECT = "CCER-YN-0042"
OWNER = "PRJ-YN-0042"
P42 = common.UnitClass(unit_type=common.UNIT_TYPE_CCER, vintage=2024, project=PROJECT)
DENIED = "PERMISSION_DENIED"


def decided(api: Api, proposal_id: str, kind: int, payload: dict[str, object]) -> str:
    """Proposed by one regulator, approved by the other; what it produced."""
    li, wang = api.regulator, api.clients["regulator2"]
    li.call(
        li.administration.ProposeAction,
        admin_pb.ProposeActionRequest(
            proposal_id=proposal_id, kind=kind, payload_json=json.dumps(payload), reason="case"
        ),
    )
    approved = wang.call(
        wang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="mee", proposal_id=proposal_id),
    ).proposal
    assert approved.status == admin_pb.PROPOSAL_STATUS_EXECUTED, approved
    return approved.result


def ccer(client: RegistryClient, account: str) -> common.Holding:
    holdings = client.balances(account, min_position=caught_up(client))
    found = [h for h in holdings if h.unit_class == P42]
    return found[0] if found else common.Holding(account_id=account)


def conserved(client: RegistryClient) -> None:
    caught_up(client)
    supply = client.call(client.audit.GetSupply, audit_pb.GetSupplyRequest())
    assert supply.lines and all(line.issued == line.held_in_accounts for line in supply.lines)


def settle(api: Api, trade_id: str, seller: str, buyer: str, quantity: int) -> str:
    trade = settlement_pb.Trade(
        trade_id=trade_id,
        seller_account=seller,
        buyer_account=buyer,
        unit_type=common.UNIT_TYPE_CCER,
        quantity=quantity,
    )
    [result] = api.exchange.settle_trades([trade])
    return result.reason


def scoped_operator(api: Api, account: str) -> RegistryClient:
    """An operator whose grant names only ``account``."""
    who = Principal("yunnan-fund", "desk")
    system = Principal("system", "tests")
    api.registry.access.grant_role(system, "desk-op", who, Role.OPERATOR.value, (account,), "t")
    return api.client(api.registry.access.issue_token(system, who, "t").token)


def test_detain_rebut_clear_ignore_confirm(api: Api) -> None:
    reg = api.regulator
    for company in ("PWR-SD-0001", "PWR-SD-0002"):
        open_company(reg, company)
    for trader in ("TRD-SH-0001", "TRD-SH-0002", "TRD-BJ-0001", "TRD-BJ-0002"):
        open_trader(reg, trader)
    register_project(reg, PROJECT, OWNER)
    issue(reg, "ISS-P42", 500, P42)  # into the project owner's account
    assert settle(api, "T-0", OWNER, "PWR-SD-0001", 300) == ""  # offsets bought
    # spread by trades: PWR-SD-0001 90, TRD-SH-0001 50, TRD-SH-0002 60, PWR-SD-0002 70,
    # TRD-BJ-0001 30 (300), and 200 still in the owner's account
    for trade_id, seller, buyer, quantity in (
        ("T-1", "PWR-SD-0001", "TRD-SH-0001", 80),
        ("T-2", "PWR-SD-0001", "TRD-SH-0002", 60),
        ("T-3", "PWR-SD-0001", "PWR-SD-0002", 70),
        ("T-4", "TRD-SH-0001", "TRD-BJ-0001", 30),
    ):
        assert settle(api, trade_id, seller, buyer, quantity) == ""
    record_emissions(reg, emissions("PWR-SD-0002", 1_000))
    surrendered = api.operator.call(
        api.operator.accounts.SurrenderUnits,
        account_pb.SurrenderUnitsRequest(
            transaction_id="S-1",
            account_id="PWR-SD-0002",
            unit_type=common.UNIT_TYPE_CCER,
            quantity=20,
            compliance_year=2025,
        ),
    )
    assert surrendered.transaction.status == common.TRANSACTION_STATUS_COMPLETED
    reg.call(
        reg.administration.FreezeAccount,
        admin_pb.FreezeAccountRequest(
            account_id="TRD-BJ-0002", reason="court order", request_id="FRZ-1"
        ),
    )
    conserved(reg)

    decided(
        api,
        "P-DET",
        admin_pb.PROPOSAL_KIND_ORIGIN_DETENTION,
        {
            "origin": f"PROJECT:{PROJECT}",
            "reference": "MEE-D-42",
            "reason": "flagged region",
            "rebuttal_days": 10,
        },
    )
    assert settle(api, "T-5", "TRD-SH-0002", "TRD-SH-0001", 1) == "ORIGIN_DETAINED"
    more = rpc_error(lambda: issue(reg, "ISS-MORE", 1, P42))
    assert (more.code, more.reason) == (PRECONDITION, "ORIGIN_DETAINED")
    held = ccer(reg, "TRD-SH-0001")
    assert (held.total, held.detained, held.frozen) == (50, 50, 0)

    listed = api.auditor.call(
        api.auditor.audit.ListRestrictions, audit_pb.ListRestrictionsRequest()
    )
    kinds = {r.kind: r for r in listed.restrictions}
    detention = kinds[common.RESTRICTION_KIND_ORIGIN_DETENTION]
    assert detention.restriction_id == f"PROJECT:{PROJECT}"
    assert {h.account_id: h.quantity for h in detention.holders} == {
        OWNER: 200,  # the project's own, not sold yet: notified like any holder
        "PWR-SD-0001": 90,
        "PWR-SD-0002": 50,
        "TRD-BJ-0001": 30,
        "TRD-SH-0001": 50,
        "TRD-SH-0002": 60,
    }
    assert kinds[common.RESTRICTION_KIND_ACCOUNT_FREEZE].restriction_id == "TRD-BJ-0002"
    desk = scoped_operator(api, "TRD-BJ-0001")
    seen = desk.call(desk.audit.ListRestrictions, audit_pb.ListRestrictionsRequest())
    assert [r.kind for r in seen.restrictions] == [common.RESTRICTION_KIND_ORIGIN_DETENTION]

    digest = hashlib.sha256(b"chain-of-custody audit, 2024").hexdigest()
    rebuttal = account_pb.SubmitRebuttalRequest(
        origin=PROJECT,
        account_id="TRD-SH-0001",
        rebuttal_id="R-1",
        statement="bought on exchange from an audited seller",
        evidence_sha256=[digest],
    )
    elsewhere = rpc_error(lambda: desk.call(desk.accounts.SubmitRebuttal, rebuttal))
    assert elsewhere.reason == "ACCOUNT_NOT_IN_SCOPE"
    submitted = api.operator.call(api.operator.accounts.SubmitRebuttal, rebuttal)
    assert submitted.holder.state == common.HOLDER_STATE_UNDER_REVIEW
    assert list(submitted.holder.evidence_sha256) == [digest]
    assert submitted.detention_reference == "MEE-D-42"
    assert api.operator.call(api.operator.accounts.SubmitRebuttal, rebuttal).replayed
    decided(
        api,
        "P-CLR",
        admin_pb.PROPOSAL_KIND_ORIGIN_HOLDER_CLEARANCE,
        {"origin": PROJECT, "account_id": "TRD-SH-0001", "evidence": "audit 7", "reason": "ok"},
    )
    assert settle(api, "T-6", "TRD-SH-0001", "TRD-SH-0002", 10) == ""  # cleared units move
    conserved(reg)

    later = api.registry.clock() + timedelta(days=11)
    api.registry.clock = lambda: later  # every rebuttal deadline has passed
    late = rpc_error(
        lambda: api.operator.call(
            api.operator.accounts.SubmitRebuttal,
            account_pb.SubmitRebuttalRequest(
                origin=PROJECT,
                account_id="TRD-SH-0002",
                rebuttal_id="R-2",
                statement="too late",
                evidence_sha256=[digest],
            ),
        )
    )
    assert (late.code, late.reason) == (PRECONDITION, "REBUTTAL_DEADLINE_PASSED")

    result = decided(
        api,
        "P-CONF",
        admin_pb.PROPOSAL_KIND_ORIGIN_CONFIRMATION,
        {"origin": PROJECT, "reason": "presumption not rebutted", "replacement_days": 30},
    )
    # detained: 90 + 50 + 30 + 60 + 200 (the owner's) = 430; TRD-SH-0001's 40 and the
    # 10 cleared units it sold to TRD-SH-0002 stay
    assert result.startswith(f"origin PROJECT:{PROJECT} confirmed: 430 units forfeited in 5")
    after = {
        a: ccer(reg, a).total
        for a in (
            "PWR-SD-0001",
            "PWR-SD-0002",
            "TRD-SH-0001",
            "TRD-SH-0002",
            "TRD-BJ-0001",
            OWNER,
            "CN-CANCELLATION",
            "CN-SURRENDER",
        )
    }
    assert after == {
        "PWR-SD-0001": 0,
        "PWR-SD-0002": 0,
        "TRD-SH-0001": 40,
        "TRD-SH-0002": 10,
        "TRD-BJ-0001": 0,
        OWNER: 0,
        "CN-CANCELLATION": 430,
        "CN-SURRENDER": 20,
    }
    assert ccer(reg, "TRD-SH-0002").detained == 0
    status = api.operator.call(
        api.operator.accounts.GetComplianceStatus,
        account_pb.GetComplianceStatusRequest(account_id="PWR-SD-0002", compliance_year=2025),
    )
    assert (status.surrendered_ccer, status.invalidated, status.replacement_remaining) == (
        0,
        20,
        20,
    )
    assert status.replacement_deadline == (later + timedelta(days=30)).date().isoformat()
    history = api.auditor.call(
        api.auditor.audit.ListRestrictions, audit_pb.ListRestrictionsRequest(include_lifted=True)
    )
    [confirmed] = [
        r for r in history.restrictions if r.kind == common.RESTRICTION_KIND_ORIGIN_DETENTION
    ]
    assert confirmed.state == common.RESTRICTION_STATE_CONFIRMED
    states = {h.account_id: h.state for h in confirmed.holders}
    assert states["TRD-SH-0001"] == common.HOLDER_STATE_CLEARED
    assert states["TRD-SH-0002"] == common.HOLDER_STATE_FORFEITED
    conserved(reg)
    assert read_models_equal_the_store(api)


def read_models_equal_the_store(api: Api) -> bool:
    """``registry check``'s comparison, once the in-process projections are at the head
    (forfeitures and invalidations project like any movement)."""
    for _ in range(50):
        caught_up(api.regulator)
        differences = reconcile(api.registry, api.read_models.engine)
        if not differences:
            return True
        if any(d.projection != "tracking" for d in differences):
            raise AssertionError(differences)
        time.sleep(0.1)
    return False


def test_the_cli_lists_restrictions_and_sends_a_rebuttal_s_digests(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = api.regulator
    open_trader(reg, "TRD-SH-0001")
    register_project(reg, PROJECT, OWNER)
    issue(reg, "ISS-P42", 50, P42)  # into the project owner's account
    assert settle(api, "T-1", OWNER, "TRD-SH-0001", 50) == ""
    decided(
        api,
        "P-DET",
        admin_pb.PROPOSAL_KIND_ORIGIN_DETENTION,
        {"origin": PROJECT, "reference": "MEE-D-43", "reason": "flagged"},
    )
    caught_up(reg)
    evidence = tmp_path / "audit.pdf"
    evidence.write_bytes(b"%PDF-1.7 chain of custody")
    connect = ["--server", api.address, "--token", api.tokens["operator"]]
    assert main(["balances", "TRD-SH-0001", *connect]) == 0
    balances = capsys.readouterr().out
    assert "detained" in balances and f"CCER/2024/{PROJECT}" in balances
    sent = main(
        ["restrictions", "rebut", PROJECT, "TRD-SH-0001", "--id", "R-1",
         "--statement", "bought from an audited seller", "--evidence", str(evidence), *connect]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert sent == 0, out
    assert "UNDER_REVIEW" in out
    assert hashlib.sha256(evidence.read_bytes()).hexdigest() in out
    assert main(["restrictions", "list", *connect]) == 0
    listed = capsys.readouterr().out
    assert f"ORIGIN_DETENTION  PROJECT:{PROJECT}" in listed
    assert "TRD-SH-0001" in listed and "UNDER_REVIEW" in listed and "MEE-D-43" in listed
    missing = main(
        ["restrictions", "rebut", "P-NONE", "TRD-SH-0001", "--id", "R-2",
         "--statement", "x", "--evidence-sha256", "a" * 64, *connect]
    )  # fmt: skip
    assert missing == 4 and "UNKNOWN_DETENTION" in capsys.readouterr().err

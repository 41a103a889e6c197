"""The issue's scripted case through the gRPC API (docs/origins.md): a province is
flagged; the units of two of its projects, spread over five accounts by trades, are
detained wherever they are; one holder rebuts and is cleared, another does not answer;
the detention is confirmed, the forfeiture cancels exactly the detained units
everywhere, and a company that had surrendered some owes them again; a project of the
province registered after the detention is covered from the start. Conservation
(GetSupply) holds after every step."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from registry.client import RegistryClient
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from tests.e2e.conftest import PRECONDITION, Api, rpc_error
from tests.e2e.market import (
    caught_up,
    ccer_trade,
    emissions,
    issue,
    open_company,
    open_trader,
    record_emissions,
    register_project,
)

ORIGIN = "PROVINCE:Hebei"
HEBEI = {"HB-0001": "PRJ-HB-0001", "HB-0002": "PRJ-HB-0002"}
ACCOUNTS = (
    "PRJ-HB-0001",
    "PRJ-HB-0002",
    "PWR-SD-0001",
    "PWR-SD-0002",
    "TRD-SH-0001",
    "TRD-SH-0002",
    "TRD-BJ-0001",
)


def of(project: str) -> common.UnitClass:
    return common.UnitClass(unit_type=common.UNIT_TYPE_CCER, vintage=2024, project=project)


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


def held(client: RegistryClient, account: str, project: str) -> tuple[int, int]:
    """(total, detained) of ``project``'s units in ``account``."""
    holdings = client.balances(account, min_position=caught_up(client))
    found = [h for h in holdings if h.unit_class.project == project]
    return sum(h.total for h in found), sum(h.detained for h in found)


def hebei_units(client: RegistryClient) -> dict[str, int]:
    """Each account's units of the two Hebei projects (accounts holding none left out)."""
    found = {a: sum(held(client, a, p)[0] for p in HEBEI) for a in ACCOUNTS}
    return {a: q for a, q in found.items() if q}


def conserved(client: RegistryClient) -> None:
    caught_up(client)
    supply = client.call(client.audit.GetSupply, audit_pb.GetSupplyRequest())
    assert supply.lines and all(line.issued == line.held_in_accounts for line in supply.lines)


def settle(api: Api, trade_id: str, seller: str, buyer: str, quantity: int, project: str) -> str:
    [result] = api.exchange.settle_trades([ccer_trade(trade_id, seller, buyer, quantity, project)])
    return result.reason


def test_a_flagged_province_detained_rebutted_confirmed_and_extended(api: Api) -> None:
    """Worked example. HB-0001 (200 units) and HB-0002 (100) are Hebei's, YN-0001 (50)
    Yunnan's. After the trades the Hebei units are: PRJ-HB-0001 200 - 120 = 80,
    PRJ-HB-0002 100 - 60 = 40, PWR-SD-0001 120 - 50 - 40 = 30, TRD-SH-0001 50,
    PWR-SD-0002 40 - 15 surrendered = 25, TRD-SH-0002 60 - 20 = 40, TRD-BJ-0001 20:
    285 detained and notified. TRD-SH-0001 is cleared (50); TRD-SH-0002 says nothing.
    The confirmation forfeits 285 - 50 = 235 in 6 accounts (HB-0001 80 + 30 + 25 = 135,
    HB-0002 40 + 40 + 20 = 100); PWR-SD-0002's 15 surrendered units are invalidated."""
    reg = api.regulator
    for project, owner in HEBEI.items():
        register_project(reg, project, owner, province="Hebei")
    register_project(reg, "YN-0001", "PRJ-YN-0001", province="Yunnan")
    for company in ("PWR-SD-0001", "PWR-SD-0002"):
        open_company(reg, company)
    for trader in ("TRD-SH-0001", "TRD-SH-0002", "TRD-BJ-0001"):
        open_trader(reg, trader)
    for project, quantity in (("HB-0001", 200), ("HB-0002", 100), ("YN-0001", 50)):
        issue(reg, f"ISS-{project}", quantity, of(project))
    for trade_id, seller, buyer, quantity, project in (
        ("T-1", "PRJ-HB-0001", "PWR-SD-0001", 120, "HB-0001"),
        ("T-2", "PRJ-HB-0002", "TRD-SH-0002", 60, "HB-0002"),
        ("T-3", "PWR-SD-0001", "TRD-SH-0001", 50, "HB-0001"),
        ("T-4", "PWR-SD-0001", "PWR-SD-0002", 40, "HB-0001"),
        ("T-5", "TRD-SH-0002", "TRD-BJ-0001", 20, "HB-0002"),
        ("T-6", "PRJ-YN-0001", "TRD-SH-0001", 50, "YN-0001"),
    ):
        assert settle(api, trade_id, seller, buyer, quantity, project) == "", trade_id
    record_emissions(reg, emissions("PWR-SD-0002", 1_000))
    surrendered = api.operator.call(
        api.operator.accounts.SurrenderUnits,
        account_pb.SurrenderUnitsRequest(
            transaction_id="S-1",
            account_id="PWR-SD-0002",
            unit_type=common.UNIT_TYPE_CCER,
            quantity=15,
            compliance_year=2025,
        ),
    )
    assert surrendered.transaction.status == common.TRANSACTION_STATUS_COMPLETED
    conserved(reg)

    result = decided(
        api,
        "P-DET",
        admin_pb.PROPOSAL_KIND_ORIGIN_DETENTION,
        {"origin": ORIGIN, "reference": "MEE-D-HB", "reason": "flagged region",
         "rebuttal_days": 10},
    )  # fmt: skip
    assert result == f"origin {ORIGIN} detained under MEE-D-HB: 7 holders notified"
    detained = {
        "PRJ-HB-0001": 80,
        "PRJ-HB-0002": 40,
        "PWR-SD-0001": 30,
        "PWR-SD-0002": 25,
        "TRD-BJ-0001": 20,
        "TRD-SH-0001": 50,
        "TRD-SH-0002": 40,
    }
    assert hebei_units(reg) == detained
    assert held(reg, "TRD-SH-0001", "HB-0001") == (50, 50)
    assert held(reg, "TRD-SH-0001", "YN-0001") == (50, 0)
    assert settle(api, "T-7", "TRD-SH-0002", "TRD-SH-0001", 1, "HB-0002") == "ORIGIN_DETAINED"
    assert settle(api, "T-8", "TRD-SH-0001", "TRD-SH-0002", 10, "YN-0001") == ""  # Yunnan
    more = rpc_error(lambda: issue(reg, "ISS-HB-MORE", 1, of("HB-0002")))
    assert (more.code, more.reason) == (PRECONDITION, "ORIGIN_DETAINED")
    listed = api.auditor.call(
        api.auditor.audit.ListRestrictions, audit_pb.ListRestrictionsRequest()
    )
    [detention] = [
        r for r in listed.restrictions if r.kind == common.RESTRICTION_KIND_ORIGIN_DETENTION
    ]
    assert detention.restriction_id == ORIGIN
    assert {h.account_id: h.quantity for h in detention.holders} == detained
    conserved(reg)

    # a project of the province registered now is covered from the start
    register_project(reg, "HB-0003", "PRJ-HB-0003", province="Hebei")
    fresh = rpc_error(lambda: issue(reg, "ISS-HB-0003", 10, of("HB-0003")))
    assert (fresh.code, fresh.reason) == (PRECONDITION, "ORIGIN_DETAINED")
    issue(reg, "ISS-YN-MORE", 10, of("YN-0001"))  # Yunnan's still issue
    conserved(reg)

    digest = hashlib.sha256(b"chain-of-custody audit, Hebei 2024").hexdigest()
    rebuttal = account_pb.SubmitRebuttalRequest(
        origin=ORIGIN,
        account_id="TRD-SH-0001",
        rebuttal_id="R-1",
        statement="bought on exchange from an audited seller outside the flagged sites",
        evidence_sha256=[digest],
    )
    submitted = api.operator.call(api.operator.accounts.SubmitRebuttal, rebuttal)
    assert submitted.holder.state == common.HOLDER_STATE_UNDER_REVIEW
    decided(
        api,
        "P-CLR",
        admin_pb.PROPOSAL_KIND_ORIGIN_HOLDER_CLEARANCE,
        {"origin": ORIGIN, "account_id": "TRD-SH-0001", "evidence": "audit 7", "reason": "ok"},
    )
    assert held(reg, "TRD-SH-0001", "HB-0001") == (50, 0)
    assert settle(api, "T-9", "TRD-SH-0001", "TRD-SH-0002", 10, "HB-0001") == ""  # cleared
    conserved(reg)

    later = api.registry.clock() + timedelta(days=11)
    api.registry.clock = lambda: later  # TRD-SH-0002 never answered: its deadline passed
    late = rpc_error(
        lambda: api.operator.call(
            api.operator.accounts.SubmitRebuttal,
            account_pb.SubmitRebuttalRequest(
                origin=ORIGIN,
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
        {"origin": ORIGIN, "reason": "presumption not rebutted", "replacement_days": 30},
    )
    assert result.startswith(f"origin {ORIGIN} confirmed: 235 units forfeited in 6")
    # exactly the detained units: TRD-SH-0001's cleared 40 and the 10 it sold stay
    assert hebei_units(reg) == {"TRD-SH-0001": 40, "TRD-SH-0002": 10}
    assert held(reg, "TRD-SH-0002", "HB-0002") == (0, 0)
    assert held(reg, "CN-CANCELLATION", "HB-0001") == (135, 0)
    assert held(reg, "CN-CANCELLATION", "HB-0002") == (100, 0)
    assert held(reg, "CN-SURRENDER", "HB-0001") == (15, 0)
    assert held(reg, "TRD-SH-0001", "YN-0001") == (40, 0)  # another province: untouched
    status = api.operator.call(
        api.operator.accounts.GetComplianceStatus,
        account_pb.GetComplianceStatusRequest(account_id="PWR-SD-0002", compliance_year=2025),
    )
    assert (status.surrendered_ccer, status.invalidated, status.replacement_remaining) == (
        0,
        15,
        15,
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

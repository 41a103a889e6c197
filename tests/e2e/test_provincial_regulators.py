"""A provincial regulator through the API (issue 18 item 8), with four eyes on: two
administrators grant a regulator scoped to Shandong; it proposes the verified emissions
of a Shandong company (a national regulator approves) and reads its status, and is
refused, with PERMISSION_DENIED and the reason, everything of another province and
every national act. The proposal and its events keep who acted, in which province, and
an auditor lists what Shandong's department did (`ListProposals` province filter, also
`registry proposals list --province`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.cli.app import build_parser
from registry.cli.regulator import _list_proposals
from registry.client import RegistryClient
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from tests.e2e.conftest import Api, rpc_error, running_api
from tests.e2e.market import compliance, compliance_holder, emissions, open_account

SD, GD = "PWR-SD-0001", "PWR-GD-0001"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api("sqlite", tmp_path, four_eyes=True) as running:
        yield running


def shandong_regulator(api: Api) -> RegistryClient:
    grant = access_pb.GrantRoleRequest(
        grant_id="sd-zhang",
        party="sd-eeb",
        name="zhang",
        role=access_pb.ROLE_REGULATOR,
        provinces=["Shandong"],
        reason="Shandong department of ecology and environment",
    )
    assert api.admin.call(api.admin.access.GrantRole, grant).pending
    assert api.admin2.call(api.admin2.access.GrantRole, grant).approved_by == "mee/admin-2"
    token = api.admin.call(
        api.admin.access.IssueToken,
        access_pb.IssueTokenRequest(party="sd-eeb", name="zhang", reason="department"),
    ).token
    return api.client(token)


def proposal(proposal_id: str, kind: int, payload: dict[str, Any]) -> admin_pb.ProposeActionRequest:
    return admin_pb.ProposeActionRequest(
        proposal_id=proposal_id, kind=kind, payload_json=json.dumps(payload), reason="2025"
    )


def table(*accounts: str) -> dict[str, Any]:
    rows = [{"account_id": a, "compliance_year": 2025, "verified_emissions": 900} for a in accounts]
    return {"reason": "verification report 2025", "rows": rows}


def denied(call: Any) -> tuple[str, str]:
    error = rpc_error(call)
    assert error.code.name == "PERMISSION_DENIED", error
    return error.reason, error.metadata.get("account", "")


def listed(client: RegistryClient, province: str = "", status: int = 0) -> list[str]:
    request = admin_pb.ListProposalsRequest(province=province, status=status)  # type: ignore[arg-type]
    reply = client.call(client.administration.ListProposals, request)
    return [p.proposal_id for p in reply.proposals]


def test_a_provincial_regulator_acts_for_its_province_only(api: Api) -> None:
    li, wang = api.regulator, api.clients["regulator2"]
    for account_id, province in ((SD, "Shandong"), (GD, "Guangdong")):
        open_account(
            li,
            account_id,
            common.ACCOUNT_TYPE_COMPLIANCE,
            compliance_holder(f"{province} Power", province=province),
        )
    zhang = shandong_regulator(api)
    listed = api.admin.call(api.admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
    [grant] = next(p.grants for p in listed.principals if p.party == "sd-eeb")
    assert list(grant.provinces) == ["Shandong"]

    adm = zhang.administration
    record = admin_pb.RecordVerifiedEmissionsRequest
    # in its province: allowed by the policy, then four eyes want a proposal
    direct = rpc_error(
        lambda: zhang.call(adm.RecordVerifiedEmissions, record(rows=[emissions(SD, 900)]))
    )
    assert direct.reason == "PROPOSAL_REQUIRED"
    # another province's company: refused before anything
    rows = [emissions(SD, 900), emissions(GD, 900)]
    assert denied(lambda: zhang.call(adm.RecordVerifiedEmissions, record(rows=rows))) == (
        "ACCOUNT_NOT_IN_PROVINCE",
        GD,
    )
    VE = admin_pb.PROPOSAL_KIND_VERIFIED_EMISSIONS
    assert denied(lambda: zhang.call(adm.ProposeAction, proposal("P-GD", VE, table(GD)))) == (
        "ACCOUNT_NOT_IN_PROVINCE",
        GD,
    )
    status = account_pb.GetComplianceStatusRequest(account_id=GD, compliance_year=2025)
    assert denied(lambda: zhang.call(zhang.accounts.GetComplianceStatus, status))[0] == (
        "ACCOUNT_NOT_IN_PROVINCE"
    )
    # national acts
    issuance = {"transaction_id": "ISS", "unit_type": "CEA", "vintage": 2025, "quantity": 1}
    for call in (
        lambda: zhang.call(
            adm.ProposeAction, proposal("P-ISS", admin_pb.PROPOSAL_KIND_ISSUANCE, issuance)
        ),
        lambda: zhang.call(
            adm.CloseComplianceYear,
            admin_pb.CloseComplianceYearRequest(compliance_year=2025, reason="x"),
        ),
        lambda: zhang.call(
            zhang.accounts.ListAccounts, account_pb.ListAccountsRequest(province="Shandong")
        ),
    ):
        assert denied(call)[0] == "NATIONAL_ACT"
    closing = proposal(
        "P-CLOSE", admin_pb.PROPOSAL_KIND_YEAR_CLOSING, {"year": 2025, "reason": "deadline"}
    )
    li.call(li.administration.ProposeAction, closing)
    approve_close = admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-CLOSE")
    assert denied(lambda: zhang.call(adm.ApproveProposal, approve_close))[0] == "NATIONAL_ACT"

    # its own province's figures: proposed by Zhang, approved by a national regulator
    zhang.call(adm.ProposeAction, proposal("P-SD", VE, table(SD)))
    done = wang.call(
        wang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="sd-eeb", proposal_id="P-SD"),
    ).proposal
    assert (done.status, done.proposer, done.approver) == (
        admin_pb.PROPOSAL_STATUS_EXECUTED,
        "sd-eeb/zhang",
        "mee/regulator-wang",
    )
    assert compliance(zhang, SD).verified_emissions == 900
    assert compliance(li, GD).state == account_pb.COMPLIANCE_STATE_NOT_VERIFIED

    # who did what, by province: the proposal's events carry both jurisdictions
    proposed = {
        p["proposal_id"]: p["proposer_provinces"]
        for p in (
            json.loads(e.payload_json)
            for e in li.stream_events(event_types=["registry.Proposal.Proposed"])
        )
    }
    assert proposed == {"sd-zhang": [], "P-CLOSE": [], "P-SD": ["Shandong"]}  # the grant's: admins'
    approvals = [
        json.loads(e.payload_json)
        for e in li.stream_events(event_types=["registry.Proposal.Approved"])
    ]
    assert [(a["approver"], a["approver_provinces"]) for a in approvals] == [
        ("mee/admin-2", []),  # the grant
        ("mee/regulator-wang", []),  # Shandong's figures, by a national regulator
    ]


def test_an_auditor_lists_what_a_province_s_department_did(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zhang (Shandong) proposes Shandong's figures, a national regulator approves; a
    national regulator proposes a correction, Zhang approves; a national proposal
    neither touches. The Shandong filter finds the first two, by either actor."""
    li, wang, auditor = api.regulator, api.clients["regulator2"], api.auditor
    open_account(
        li,
        SD,
        common.ACCOUNT_TYPE_COMPLIANCE,
        compliance_holder("Shandong Power", province="Shandong"),
    )
    zhang = shandong_regulator(api)
    VE = admin_pb.PROPOSAL_KIND_VERIFIED_EMISSIONS
    zhang.call(zhang.administration.ProposeAction, proposal("P-SD", VE, table(SD)))
    wang.call(
        wang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="sd-eeb", proposal_id="P-SD"),
    )
    li.call(li.administration.ProposeAction, proposal("P-SD-FIX", VE, table(SD)))
    fixed = zhang.call(
        zhang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-SD-FIX"),
    ).proposal
    assert (fixed.status, fixed.approver, list(fixed.approver_provinces)) == (
        admin_pb.PROPOSAL_STATUS_EXECUTED,
        "sd-eeb/zhang",
        ["Shandong"],
    )
    closing = {"year": 2025, "reason": "deadline"}
    li.call(
        li.administration.ProposeAction,
        proposal("P-CLOSE", admin_pb.PROPOSAL_KIND_YEAR_CLOSING, closing),
    )

    got = auditor.call(
        auditor.administration.GetProposal,
        admin_pb.GetProposalRequest(party="sd-eeb", proposal_id="P-SD"),
    ).proposal
    assert (got.proposer, list(got.proposer_provinces)) == ("sd-eeb/zhang", ["Shandong"])
    assert (got.approver, list(got.approver_provinces)) == ("mee/regulator-wang", [])

    assert listed(auditor) == ["sd-zhang", "P-SD", "P-SD-FIX", "P-CLOSE"]
    for spelling in ("Shandong", "shandong"):
        assert listed(auditor, spelling) == ["P-SD", "P-SD-FIX"]
    assert listed(zhang, "Shandong") == ["P-SD", "P-SD-FIX"]  # its own record, too
    assert listed(auditor, "Guangdong") == []
    assert listed(auditor, "Shandong", admin_pb.PROPOSAL_STATUS_PENDING) == []
    bad = rpc_error(lambda: listed(auditor, "x" * 256))
    assert (bad.code.name, bad.reason) == ("INVALID_ARGUMENT", "INVALID_FILTER")

    args = build_parser().parse_args(["proposals", "list", "--province", "Shandong"])
    _list_proposals(auditor, args)
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["sd-eeb:P-SD", "mee:P-SD-FIX"]
    assert "sd-eeb/zhang (Shandong)" in lines[0] and "mee/regulator-wang" in lines[0]
    assert "mee/regulator-li" in lines[1] and "sd-eeb/zhang (Shandong)" in lines[1]

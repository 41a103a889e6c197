"""CCER projects over a real gRPC channel: registered through four eyes, issued into the
owner's account only while registered and not suspended, listed with filters and
pages, traded by project, and the `registry projects` commands against a server
process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.client import RegistryClient
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import INVALID, NOT_FOUND, PRECONDITION, Api, rpc_error, running_api
from tests.e2e.market import (
    PROJECT_OWNER,
    caught_up,
    ccer_trade,
    issue,
    open_account,
    open_trader,
    project_details,
    register_project,
    trade,
)
from tests.e2e.test_server_process import add_principal, cli, first_token, serving

P = admin_pb


def ccer(project: str, vintage: int = 2024) -> common.UnitClass:
    return common.UnitClass(unit_type=common.UNIT_TYPE_CCER, vintage=vintage, project=project)


def decide(api: Api, proposal_id: str, kind: int, payload: dict[str, Any]) -> P.Proposal:
    """Proposed by one regulator, approved by the other: the proposal as decided."""
    li, wang = api.regulator, api.clients["regulator2"]
    li.call(
        li.administration.ProposeAction,
        P.ProposeActionRequest(
            proposal_id=proposal_id, kind=kind, payload_json=json.dumps(payload), reason="4 eyes"
        ),
    )
    return wang.call(
        wang.administration.ApproveProposal,
        P.ApproveProposalRequest(party="mee", proposal_id=proposal_id),
    ).proposal


def registration(project_id: str, **changes: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "owner_account": PROJECT_OWNER,
        "province": "Gansu",
        "methodology": "CCER-14-001-V01",
        "sector": "WIND",
        "verifier": "China Quality Certification Centre",
        "developer": "Gansu Jiuquan Wind Farm Co.",
        "crediting_start": "2020-01-01",
        "crediting_end": "2029-12-31",
        "reason": "validated",
        "reference": f"MEE-REG-{project_id}",
        **changes,
    }


def issuance(txn: str, project: str) -> dict[str, Any]:
    return {
        "transaction_id": txn,
        "unit_type": "CCER",
        "vintage": 2024,
        "project": project,
        "quantity": 500,
        "reason": "2024 reductions",
    }


@pytest.mark.postgres
def test_four_eyes_register_issue_suspend(tmp_path: Path) -> None:
    """With four eyes required: the direct call is refused, a registration proposal
    approved by a second regulator registers the project; issuance of it then lands in
    the owner's account; an unregistered or suspended project's issuance fails."""
    with running_api("postgres", tmp_path, four_eyes=True) as api:
        reg = api.regulator
        holder = common.Holder(name="Gansu Jiuquan Wind Farm Co.")
        open_account(reg, PROJECT_OWNER, common.ACCOUNT_TYPE_PROJECT, holder)
        direct = rpc_error(
            lambda: reg.call(
                reg.administration.RegisterProject,
                P.RegisterProjectRequest(
                    project_id="P-1", details=project_details(), reason="x", reference="R"
                ),
            )
        )
        assert (direct.code, direct.reason) == (PRECONDITION, "PROPOSAL_REQUIRED")
        assert direct.metadata["kind"] == "PROJECT_REGISTRATION"

        refused = decide(api, "ISS-P-1-EARLY", P.PROPOSAL_KIND_ISSUANCE, issuance("I-0", "P-1"))
        assert (refused.status, refused.failure_reason) == (
            P.PROPOSAL_STATUS_FAILED,
            "PROJECT_NOT_REGISTERED",
        )
        done = decide(api, "REG-P-1", P.PROPOSAL_KIND_PROJECT_REGISTRATION, registration("P-1"))
        assert (done.status, done.result) == (P.PROPOSAL_STATUS_EXECUTED, "project P-1 REGISTERED")
        project = reg.call(reg.administration.GetProject, P.GetProjectRequest(project_id="P-1"))
        assert project.project.status == P.PROJECT_STATUS_REGISTERED
        assert project.project.registered_by == "mee/regulator-wang"
        assert project.project.details.crediting_end == common.Date(year=2029, month=12, day=31)

        issued = decide(api, "ISS-P-1", P.PROPOSAL_KIND_ISSUANCE, issuance("I-1", "P-1"))
        assert (issued.status, issued.result) == (P.PROPOSAL_STATUS_EXECUTED, "mee:I-1")
        txn = reg.call(
            reg.settlement.GetTrade,
            settlement_pb.GetTradeRequest(trade_id="I-1"),
        ).transaction
        assert (txn.destination_account, txn.quantity) == (PROJECT_OWNER, 500)
        caught_up(reg)
        held = reg.balances(PROJECT_OWNER)
        assert [(h.unit_class, h.total) for h in held] == [(ccer("P-1"), 500)]

        suspension = {"project_id": "P-1", "reason": "verification lapsed", "reference": "S-1"}
        suspended = decide(api, "SUS-P-1", P.PROPOSAL_KIND_PROJECT_SUSPENSION, suspension)
        assert suspended.result == "project P-1 SUSPENDED"
        again = decide(api, "ISS-P-1-2", P.PROPOSAL_KIND_ISSUANCE, issuance("I-2", "P-1"))
        assert again.failure_reason == "PROJECT_SUSPENDED"
        listed = reg.call(
            reg.administration.ListProjects,
            P.ListProjectsRequest(status=P.PROJECT_STATUS_SUSPENDED),
        )
        assert [p.status_reference for p in listed.projects] == ["S-1"]


def test_register_read_list_and_refuse(api: Api) -> None:
    reg = api.regulator
    assert register_project(reg, "P-3").project.status == P.PROJECT_STATUS_REGISTERED
    retry = register_project(reg, "P-3")
    assert retry.replayed and not retry.position
    register_project(reg, "P-1", province="Yunnan")
    register_project(reg, "P-2", methodology="CCER-01-001-V01")
    register_project(reg, "P-4", province="yunnan")
    adm = reg.administration
    adm_call = reg.call
    suspended = adm_call(
        adm.SuspendProject,
        P.SuspendProjectRequest(project_id="P-4", reason="lapsed", reference="S-4"),
    )
    assert suspended.project.status == P.PROJECT_STATUS_SUSPENDED and suspended.position

    def ids(**request: Any) -> list[str]:
        pages, token = [], ""
        while True:
            page = adm_call(
                adm.ListProjects, P.ListProjectsRequest(page_size=1, page_token=token, **request)
            )
            pages.append([p.project_id for p in page.projects])
            token = page.next_page_token
            if not token:
                return [i for p in pages for i in p]

    assert ids() == ["P-1", "P-2", "P-3", "P-4"]
    assert ids(province="YUNNAN") == ["P-1", "P-4"]
    assert ids(methodology="CCER-01-001-V01") == ["P-2"]
    assert ids(status=P.PROJECT_STATUS_REGISTERED) == ["P-1", "P-2", "P-3"]
    assert ids(province="Yunnan", status=P.PROJECT_STATUS_SUSPENDED) == ["P-4"]
    assert [p.project_id for p in reg.projects(province="Gansu")] == ["P-2", "P-3"]
    # auditors read projects; nobody but a regulator changes them
    auditor = api.auditor
    seen = auditor.call(auditor.administration.GetProject, P.GetProjectRequest(project_id="P-2"))
    assert seen.project.details.methodology == "CCER-01-001-V01"
    denied = rpc_error(
        lambda: auditor.call(
            auditor.administration.DeregisterProject,
            P.DeregisterProjectRequest(project_id="P-2", reason="x", reference="D"),
        )
    )
    assert (denied.code, denied.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_GRANTED")

    unknown = rpc_error(lambda: adm_call(adm.GetProject, P.GetProjectRequest(project_id="P-9")))
    assert (unknown.code, unknown.reason) == (NOT_FOUND, "UNKNOWN_PROJECT")
    bad = rpc_error(
        lambda: adm_call(
            adm.RegisterProject,
            P.RegisterProjectRequest(
                project_id="P-5",
                details=project_details(province=" Gansu"),
                reason="x",
                reference="R-5",
            ),
        )
    )
    assert (bad.code, bad.reason) == (INVALID, "INVALID_PROJECT_DETAILS")
    assert [field for field, _ in bad.violations] == ["details.province"]
    no_end = project_details()
    no_end.ClearField("crediting_end")
    missing = rpc_error(
        lambda: adm_call(
            adm.RegisterProject,
            P.RegisterProjectRequest(project_id="P-5", details=no_end, reason="x", reference="R"),
        )
    )
    assert [field for field, _ in missing.violations] == ["details.crediting_end"]
    other = rpc_error(
        lambda: adm_call(
            adm.RegisterProject,
            P.RegisterProjectRequest(
                project_id="P-3", details=project_details(), reason="x", reference="OTHER"
            ),
        )
    )
    assert (other.code, other.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "PROJECT_EXISTS_WITH_DIFFERENT_CONTENT",
    )
    open_trader(reg, "TRD-SH-0001")
    wrong_owner = rpc_error(
        lambda: adm_call(
            adm.RegisterProject,
            P.RegisterProjectRequest(
                project_id="P-6",
                details=project_details("TRD-SH-0001"),
                reason="x",
                reference="R-6",
            ),
        )
    )
    assert (wrong_owner.code, wrong_owner.reason) == (
        PRECONDITION,
        "PROJECT_OWNER_NOT_PROJECT_ACCOUNT",
    )
    assert ids() == ["P-1", "P-2", "P-3", "P-4"], "refusals registered nothing"
    token = rpc_error(lambda: adm_call(adm.ListProjects, P.ListProjectsRequest(page_token="x")))
    assert token.reason == "INVALID_PAGE_TOKEN"

    # a change of details, then the status round: reinstated, deregistered for good
    moved = project_details(methodology="CCER-14-002-V01")
    update = P.UpdateProjectRequest(project_id="P-2", details=moved, reason="r", reference="U-1")
    changed = adm_call(adm.UpdateProject, update)
    assert changed.project.details.methodology == "CCER-14-002-V01" and changed.position
    assert adm_call(adm.UpdateProject, update).replayed
    assert ids(methodology="CCER-01-001-V01") == []
    back = P.ReinstateProjectRequest(project_id="P-4", reason="re-verified", reference="R-4")
    assert adm_call(adm.ReinstateProject, back).project.status == P.PROJECT_STATUS_REGISTERED
    again = P.ReinstateProjectRequest(project_id="P-4", reason="again", reference="R-5")
    assert adm_call(adm.ReinstateProject, back).replayed  # the same reinstatement: a retry
    not_suspended = rpc_error(lambda: adm_call(adm.ReinstateProject, again))
    assert not_suspended.reason == "PROJECT_NOT_SUSPENDED"
    gone = P.DeregisterProjectRequest(project_id="P-4", reason="withdrawn", reference="D-4")
    assert adm_call(adm.DeregisterProject, gone).project.status == P.PROJECT_STATUS_DEREGISTERED
    assert adm_call(adm.DeregisterProject, gone).replayed
    late_change = P.UpdateProjectRequest(
        project_id="P-4", details=moved, reason="r", reference="U-2"
    )
    late = rpc_error(lambda: adm_call(adm.UpdateProject, late_change))
    assert late.reason == "PROJECT_DEREGISTERED"


def test_issuance_and_a_trade_naming_its_project(api: Api) -> None:
    """P-1 of 2023 (older, so first in FIFO order) and P-2 of 2024 in the owner's
    account: a CCER trade naming P-2 takes P-2's units; one naming a project the seller
    does not hold is refused; a suspended project's issuance is refused, its units still
    trade."""
    reg, exchange = api.regulator, api.exchange
    register_project(reg, "P-1")
    register_project(reg, "P-2")
    unregistered = rpc_error(lambda: issue(reg, "I-0", 10, ccer("P-9")))
    assert (unregistered.code, unregistered.reason) == (PRECONDITION, "PROJECT_NOT_REGISTERED")
    assert unregistered.metadata["project"] == "P-9"
    outside = rpc_error(lambda: issue(reg, "I-X", 10, ccer("P-1", vintage=2031)))
    assert outside.reason == "VINTAGE_OUTSIDE_CREDITING_PERIOD"
    issue(reg, "I-1", 100, ccer("P-1", vintage=2023))
    issue(reg, "I-2", 100, ccer("P-2"))
    open_trader(reg, "TRD-SH-0001")
    results = exchange.settle_trades(
        [
            ccer_trade("T-1", PROJECT_OWNER, "TRD-SH-0001", 30, project="P-2"),
            ccer_trade("T-2", PROJECT_OWNER, "TRD-SH-0001", 5, project="P-7"),
            ccer_trade("T-3", PROJECT_OWNER, "TRD-SH-0001", 10),
        ]
    )
    assert [(r.status, r.reason) for r in results] == [
        (settlement_pb.TRADE_STATUS_SETTLED, ""),
        (settlement_pb.TRADE_STATUS_REFUSED, "INSUFFICIENT_UNITS"),
        (settlement_pb.TRADE_STATUS_SETTLED, ""),
    ]
    assert [b.unit_class.project for b in results[0].blocks] == ["P-2"]
    assert [b.unit_class.project for b in results[2].blocks] == ["P-1"]  # oldest
    allowance = trade("T-4", PROJECT_OWNER, "TRD-SH-0001", 1)
    allowance.project = "P-1"
    [rejected] = exchange.settle_trades([allowance])
    assert (rejected.status, rejected.reason) == (
        settlement_pb.TRADE_STATUS_REJECTED,
        "UNEXPECTED_PROJECT",
    )
    reg.call(
        reg.administration.SuspendProject,
        P.SuspendProjectRequest(project_id="P-2", reason="lapsed", reference="S-2"),
    )
    suspended = rpc_error(lambda: issue(reg, "I-3", 10, ccer("P-2")))
    assert (suspended.reason, suspended.metadata["reference"]) == ("PROJECT_SUSPENDED", "S-2")
    [moved] = exchange.settle_trades(
        [ccer_trade("T-5", PROJECT_OWNER, "TRD-SH-0001", 20, project="P-2")]
    )
    assert moved.status == settlement_pb.TRADE_STATUS_SETTLED


def test_the_projects_commands(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        token, _, _ = first_token(tmp_path)
        second = add_principal(server, "mee", "regulator-wang", "regulator")
        with RegistryClient(server.address, token, attempts=1) as client:
            holder = common.Holder(name="Gansu Jiuquan Wind Farm Co.")
            open_account(client, PROJECT_OWNER, common.ACCOUNT_TYPE_PROJECT, holder)
        details = [
            *("--owner", PROJECT_OWNER, "--province", "Gansu"),
            *("--methodology", "CCER-14-001-V01", "--sector", "WIND"),
            *("--verifier", "CQC", "--developer", "Gansu Wind Co."),
            *("--crediting-start", "2020-01-01", "--crediting-end", "2029-12-31"),
        ]
        proposed = cli(
            server,
            *("projects", "register", "P-0117", *details),
            *("--reference", "MEE-REG-0117", "--reason", "validated", "--propose", "P-REG"),
        )
        assert proposed.returncode == 0, proposed.stderr
        assert "proposed mee:P-REG: PROJECT_REGISTRATION of P-0117" in proposed.stdout
        approved = cli(server, "proposals", "approve", "mee", "P-REG", "--token", second)
        assert approved.returncode == 0, approved.stderr
        shown = cli(server, "projects", "show", "P-0117")
        assert shown.returncode == 0, shown.stderr
        assert "project P-0117: REGISTERED (MEE-REG-0117: validated)" in shown.stdout
        assert "crediting period 2020-01-01 .. 2029-12-31" in shown.stdout
        direct = cli(
            server,
            *("projects", "register", "P-0200", *details[:2], "--province", "Yunnan"),
            *details[4:],
            *("--reference", "MEE-REG-0200", "--reason", "validated"),
        )
        assert direct.returncode == 0, direct.stderr
        assert direct.stdout.startswith("register: done\nproject P-0200: REGISTERED")
        suspended = cli(
            server, "projects", "suspend", "P-0200", "--reference", "S-1", "--reason", "lapsed"
        )
        assert suspended.returncode == 0, suspended.stderr
        listed = cli(server, "projects", "list", "--status", "SUSPENDED")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert [line.split()[:2] for line in lines[1:-1]] == [["P-0200", "SUSPENDED"]]
        assert lines[-1] == "1 project(s)"
        gansu = cli(server, "projects", "list", "--province", "gansu")
        assert "P-0117" in gansu.stdout and "P-0200" not in gansu.stdout
        unknown = cli(server, "projects", "show", "P-NONE")
        assert unknown.returncode == 4 and "UNKNOWN_PROJECT" in unknown.stderr
        again = cli(
            server, "projects", "suspend", "P-0200", "--reference", "S-2", "--reason", "again"
        )
        assert again.returncode == 6 and "PROJECT_SUSPENDED" in again.stderr

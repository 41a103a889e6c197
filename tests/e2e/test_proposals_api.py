"""Four eyes through the gRPC API: one regulator proposes, another approves, and only
then does the action take effect; a proposer cannot approve their own proposal."""

from __future__ import annotations

import json
from pathlib import Path

from registry.v1 import administration_service_pb2 as admin_pb
from tests.e2e.conftest import INVALID, NOT_FOUND, PRECONDITION, Api, rpc_error, running_api
from tests.e2e.market import balance, caught_up, issue, open_company


def test_an_issuance_takes_effect_only_when_a_second_regulator_approves(api: Api) -> None:
    li, wang = api.regulator, api.clients["regulator2"]
    open_company(li, "PWR-SD-0001")
    payload = {
        "transaction_id": "ISS-2025",
        "unit_type": "CEA",
        "vintage": 2025,
        "quantity": 5_000,
        "reason": "2025 allocation",
    }
    request = admin_pb.ProposeActionRequest(
        proposal_id="P-1",
        kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
        payload_json=json.dumps(payload),
        reason="2025 plan, approved by the ministry",
    )
    proposed = li.call(li.administration.ProposeAction, request)
    assert proposed.proposal.status == admin_pb.PROPOSAL_STATUS_PENDING
    assert li.call(li.administration.ProposeAction, request).replayed
    assert balance(li, "CN-ISSUANCE", caught_up(li)) == 0

    own = rpc_error(
        lambda: li.call(
            li.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-1"),
        )
    )
    assert (own.code, own.reason) == (PRECONDITION, "SELF_APPROVAL_FORBIDDEN")
    listed = wang.call(
        wang.administration.ListProposals,
        admin_pb.ListProposalsRequest(status=admin_pb.PROPOSAL_STATUS_PENDING),
    )
    assert [p.proposal_id for p in listed.proposals] == ["P-1"]

    approved = wang.call(
        wang.administration.ApproveProposal,
        admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-1"),
    )
    assert approved.proposal.status == admin_pb.PROPOSAL_STATUS_EXECUTED
    assert (approved.proposal.approver, approved.proposal.result) == (
        "mee/regulator-wang",
        "mee:ISS-2025",
    )
    assert balance(li, "CN-ISSUANCE", caught_up(li)) == 5_000
    got = li.call(
        li.administration.GetProposal, admin_pb.GetProposalRequest(party="mee", proposal_id="P-1")
    )
    assert json.loads(got.proposal.payload_json) == payload
    assert got.proposal.approve_time.seconds > 0

    bad = rpc_error(
        lambda: li.call(
            li.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id="P-2",
                kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
                payload_json="[1]",
                reason="x",
            ),
        )
    )
    assert (bad.code, bad.reason) == (INVALID, "INVALID_PAYLOAD")
    expired = li.call(li.administration.ExpireProposals, admin_pb.ExpireProposalsRequest())
    assert list(expired.proposals) == []  # nothing is due yet
    missing = rpc_error(
        lambda: wang.call(
            wang.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-404"),
        )
    )
    assert (missing.code, missing.reason) == (NOT_FOUND, "UNKNOWN_PROPOSAL")


def test_with_four_eyes_required_direct_calls_are_refused(tmp_path: Path) -> None:
    with running_api("sqlite", tmp_path, four_eyes=True) as api:
        li, wang = api.regulator, api.clients["regulator2"]
        direct = rpc_error(lambda: issue(li, "ISS-1", 100))
        assert (direct.code, direct.reason, direct.metadata["kind"]) == (
            PRECONDITION,
            "PROPOSAL_REQUIRED",
            "ISSUANCE",
        )
        li.call(
            li.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id="P-1",
                kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
                reason="plan",
                payload_json=json.dumps(
                    {
                        "transaction_id": "ISS-1",
                        "unit_type": "CEA",
                        "vintage": 2025,
                        "quantity": 100,
                    }
                ),
            ),
        )
        done = wang.call(
            wang.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party="mee", proposal_id="P-1"),
        )
        assert done.proposal.status == admin_pb.PROPOSAL_STATUS_EXECUTED
        assert balance(li, "CN-ISSUANCE", caught_up(li)) == 100

"""Issue 15, item 11: ids are validated before anything is looked up, so a malformed
one is INVALID_ARGUMENT naming the field (as the API documents), not NOT_FOUND. The
hold, trade, account and min_position cases are in the settlement and account API
tests; ApproveProposal's are here."""

from __future__ import annotations

import grpc
import pytest

from registry.v1 import administration_service_pb2 as admin_pb
from tests.e2e.conftest import Api, rpc_error
from tests.e2e.market import head_position


@pytest.mark.parametrize(
    ("party", "proposal_id", "reason", "field"),
    [
        ("MEE", "P-1", "INVALID_PARTY", "party"),
        ("mee/x", "P-1", "INVALID_PARTY", "party"),
        ("mee", "P 1", "INVALID_ID", "proposal_id"),
        ("mee", "P" * 129, "INVALID_ID", "proposal_id"),
        ("mee", "P\x001", "INVALID_ID", "proposal_id"),
    ],
)
def test_approve_proposal_refuses_malformed_ids(
    api: Api, party: str, proposal_id: str, reason: str, field: str
) -> None:
    """Before, these were looked up and answered NOT_FOUND UNKNOWN_PROPOSAL."""
    reg = api.clients["regulator2"]
    head = head_position(reg)
    error = rpc_error(
        lambda: reg.call(
            reg.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party=party, proposal_id=proposal_id),
        )
    )
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert [f for f, _ in error.violations] == [field]
    assert head_position(reg) == head

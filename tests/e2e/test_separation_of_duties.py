"""Separation of duties over a real channel (issue 15, items 2 and 10): what one
administrator's token alone could do before, each attack now refused and the ledger
unchanged; four eyes on grants (a second administrator approves); an approver made
for the occasion refused; the last administrator kept; reasons, grant ids and party
``system`` checked.

Before the fix, with only ``mee/admin``'s token: it granted itself exchange ``*`` and
settled 500 t out of a company's account; granted itself and a made-up principal the
regulator role and had them propose and approve a 1,000,000 t issuance; and granted an
operator scope on ``CN-ISSUANCE`` and cancelled units with no proposal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from registry.client import RegistryClient
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import Api, rpc_error, running_api
from tests.e2e.market import (
    ALLOCATIONS,
    CEA,
    TRADER,
    balance,
    caught_up,
    head_position,
    seed_market,
    trade,
)

COMPANY = min(ALLOCATIONS)
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """A seeded market (by a regulator's direct calls: four eyes off, which no access
    rule here depends on)."""
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    with running_api(request.param, tmp_path) as seeded:
        seed_market(seeded.regulator)
        caught_up(seeded.regulator)
        yield seeded


def grant(
    client: RegistryClient,
    grant_id: str,
    party: str,
    name: str,
    role: int,
    accounts: tuple[str, ...] = (),
    reason: str = "new desk",
) -> access_pb.GrantRoleResponse:
    return client.call(
        client.access.GrantRole,
        access_pb.GrantRoleRequest(
            grant_id=grant_id,
            party=party,
            name=name,
            role=role,
            account_ids=list(accounts),
            reason=reason,
        ),
    )


def token_for(client: RegistryClient, party: str, name: str) -> str:
    return client.call(
        client.access.IssueToken,
        access_pb.IssueTokenRequest(party=party, name=name, reason="new desk"),
    ).token


def supply(client: RegistryClient) -> int:
    reply = client.call(client.audit.GetSupply, audit_pb.GetSupplyRequest())
    return sum(line.issued for line in reply.lines)


def test_an_administrator_alone_cannot_become_an_exchange_and_settle(api: Api) -> None:
    """Attack 1: the admin grants itself exchange '*' and settles 500 t out of a company."""
    admin = api.admin
    before = balance(api.regulator, COMPANY, head_position(api.regulator))
    error = rpc_error(
        lambda: grant(admin, "self-ex", "mee", "admin", access_pb.ROLE_EXCHANGE, ("*",))
    )
    assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES")
    # a made-up exchange: only proposed, never in effect without a second administrator
    proposed = grant(admin, "rogue-ex", "rogue", "desk", access_pb.ROLE_EXCHANGE, ("*",))
    assert proposed.pending
    with RegistryClient(api.address, token_for(admin, "rogue", "desk"), attempts=1) as rogue:
        error = rpc_error(
            lambda: rogue.call(
                rogue.settlement.SettleTrades,
                settlement_pb.SettleTradesRequest(trades=[trade("ROGUE-1", COMPANY, TRADER, 500)]),
            )
        )
        assert (error.code, error.reason) == (DENIED, "ROLE_NOT_GRANTED")
    error = rpc_error(
        lambda: admin.call(
            admin.settlement.SettleTrades,
            settlement_pb.SettleTradesRequest(trades=[trade("ROGUE-2", COMPANY, TRADER, 500)]),
        )
    )
    assert (error.code, error.reason) == (DENIED, "ROLE_NOT_GRANTED")
    assert balance(api.regulator, COMPANY, head_position(api.regulator)) == before


def test_an_administrator_alone_cannot_mint_regulators_and_issue(tmp_path: Path) -> None:
    """Attack 2: the admin grants itself and a made-up principal the regulator role,
    then they propose and approve a 1,000,000 t issuance (four eyes required)."""
    with running_api("sqlite", tmp_path, four_eyes=True) as api:
        admin = api.admin
        issued = supply(api.regulator)
        error = rpc_error(
            lambda: grant(admin, "self-reg", "mee", "admin", access_pb.ROLE_REGULATOR)
        )
        assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES")
        assert grant(admin, "ghost-reg", "mee", "ghost", access_pb.ROLE_REGULATOR).pending
        with RegistryClient(api.address, token_for(admin, "mee", "ghost"), attempts=1) as ghost:
            error = rpc_error(
                lambda: ghost.call(
                    ghost.administration.ProposeAction,
                    admin_pb.ProposeActionRequest(
                        proposal_id="GHOST-ISS",
                        kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
                        payload_json=json.dumps(
                            {
                                "transaction_id": "GHOST-ISS",
                                "unit_type": "CEA",
                                "vintage": 2025,
                                "quantity": 1_000_000,
                                "reason": "x",
                            }
                        ),
                        reason="more units",
                    ),
                )
            )
            assert (error.code, error.reason) == (DENIED, "ROLE_NOT_GRANTED")
        error = rpc_error(
            lambda: admin.call(
                admin.administration.ProposeAction,
                admin_pb.ProposeActionRequest(
                    proposal_id="ADMIN-ISS",
                    kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
                    payload_json="{}",
                    reason="x",
                ),
            )
        )
        assert (error.code, error.reason) == (DENIED, "ROLE_NOT_GRANTED")
        # even two administrators cannot make an administrator a regulator
        error = rpc_error(
            lambda: grant(api.admin2, "admin-reg", "mee", "admin", access_pb.ROLE_REGULATOR)
        )
        assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES")
        assert supply(api.regulator) == issued


def test_no_grant_covers_a_national_account(api: Api) -> None:
    """Attack 3: an operator scope on CN-ISSUANCE, then units cancelled with no proposal."""
    admin = api.admin
    head = head_position(api.regulator)
    before = balance(api.regulator, "CN-ISSUANCE", head)
    for party, name in (("mee", "admin"), ("rogue", "ops")):
        error = rpc_error(
            lambda p=party, n=name: grant(
                admin, f"nat-{n}", p, n, access_pb.ROLE_OPERATOR, ("CN-ISSUANCE",)
            )
        )
        assert (error.code, error.reason) == (INVALID, "INVALID_GRANT_SCOPE")
    # the second administrator cannot approve one either: refused before any proposal
    error = rpc_error(
        lambda: grant(
            api.admin2, "nat-ops", "rogue", "ops", access_pb.ROLE_OPERATOR, ("CN-ISSUANCE",)
        )
    )
    assert (error.code, error.reason) == (INVALID, "INVALID_GRANT_SCOPE")
    assert head_position(api.regulator) == head  # nothing recorded
    token = token_for(admin, "rogue", "ops")
    head = head_position(api.regulator)
    with RegistryClient(api.address, token, attempts=1) as rogue:
        error = rpc_error(
            lambda: rogue.call(
                rogue.accounts.CancelUnits,
                account_pb.CancelUnitsRequest(
                    transaction_id="ROGUE-CXL",
                    account_id="CN-ISSUANCE",
                    unit_type=CEA,
                    vintage=2025,
                    quantity=1_000,
                    reason="x",
                ),
            )
        )
        assert error.code == DENIED
    assert head_position(api.regulator) == head
    assert balance(api.regulator, "CN-ISSUANCE", head) == before


def test_a_grant_takes_a_second_administrator(api: Api) -> None:
    admin, admin2 = api.admin, api.admin2
    proposed = grant(
        admin,
        "zhou-reg",
        "mee",
        "regulator-zhou",
        access_pb.ROLE_REGULATOR,
        reason="MEE registry desk",
    )
    assert (proposed.pending, proposed.replayed, proposed.proposed_by) == (True, False, "mee/admin")
    again = grant(admin, "zhou-reg", "mee", "regulator-zhou", access_pb.ROLE_REGULATOR)
    assert (again.pending, again.replayed) == (True, True)  # the proposer again: a retry
    listed = admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
    [zhou] = [p for p in listed.principals if p.name == "regulator-zhou"]
    assert [(g.grant_id, g.pending, g.granted_by) for g in zhou.grants] == [
        ("zhou-reg", True, "mee/admin")
    ]
    # a regulator can neither approve nor reject an access change
    for call in (
        lambda: api.regulator.call(
            api.regulator.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party="system", proposal_id="zhou-reg"),
        ),
        lambda: api.regulator.call(
            api.regulator.administration.RejectProposal,
            admin_pb.RejectProposalRequest(party="system", proposal_id="zhou-reg", reason="no"),
        ),
    ):
        error = rpc_error(call)
        assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES")
    # nor propose one
    error = rpc_error(
        lambda: api.regulator.call(
            api.regulator.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id="zhou-2",
                kind=admin_pb.PROPOSAL_KIND_ROLE_GRANT,
                payload_json=json.dumps(
                    {
                        "grant_id": "zhou-2",
                        "party": "mee",
                        "name": "regulator-zhou",
                        "role": "regulator",
                        "accounts": ["*"],
                    }
                ),
                reason="x",
            ),
        )
    )
    assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES")
    # another grant under the same id is not what was proposed
    error = rpc_error(
        lambda: grant(admin2, "zhou-reg", "mee", "regulator-zhou", access_pb.ROLE_AUDITOR)
    )
    assert error.code in (grpc.StatusCode.ALREADY_EXISTS, PRECONDITION)
    approved = grant(admin2, "zhou-reg", "mee", "regulator-zhou", access_pb.ROLE_REGULATOR)
    assert (approved.pending, approved.proposed_by, approved.approved_by) == (
        False,
        "mee/admin",
        "mee/admin-2",
    )
    listed = admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
    [zhou] = [p for p in listed.principals if p.name == "regulator-zhou"]
    assert [(g.pending, g.granted_by, g.approved_by) for g in zhou.grants] == [
        (False, "mee/admin", "mee/admin-2")
    ]
    # a pending grant withdrawn by RevokeGrant can no longer be approved
    assert grant(admin, "sun-reg", "mee", "regulator-sun", access_pb.ROLE_REGULATOR).pending
    admin2.call(
        admin2.access.RevokeGrant,
        access_pb.RevokeGrantRequest(grant_id="sun-reg", reason="not agreed"),
    )
    error = rpc_error(
        lambda: grant(admin2, "sun-reg", "mee", "regulator-sun", access_pb.ROLE_REGULATOR)
    )
    assert (error.code, error.reason) == (PRECONDITION, "PROPOSAL_NOT_PENDING")


def test_an_approver_made_after_the_proposal_is_refused(tmp_path: Path) -> None:
    """A regulator minted once a proposal waits cannot approve it; one that was there can."""
    with running_api("sqlite", tmp_path, four_eyes=True) as api:
        li = api.regulator
        li.call(
            li.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id="ISS-1",
                kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
                payload_json=json.dumps(
                    {
                        "transaction_id": "ISS-1",
                        "unit_type": "CEA",
                        "vintage": 2025,
                        "quantity": 1_000_000,
                        "reason": "x",
                    }
                ),
                reason="2025 issuance",
            ),
        )
        grant(api.admin, "zhou-reg", "mee", "regulator-zhou", access_pb.ROLE_REGULATOR)
        assert not grant(
            api.admin2, "zhou-reg", "mee", "regulator-zhou", access_pb.ROLE_REGULATOR
        ).pending
        approve = admin_pb.ApproveProposalRequest(party="mee", proposal_id="ISS-1")
        with RegistryClient(
            api.address, token_for(api.admin, "mee", "regulator-zhou"), attempts=1
        ) as zhou:
            error = rpc_error(lambda: zhou.call(zhou.administration.ApproveProposal, approve))
            assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES")
        wang = api.clients["regulator2"]
        done = wang.call(wang.administration.ApproveProposal, approve)
        assert done.proposal.status == admin_pb.PROPOSAL_STATUS_EXECUTED


def test_the_last_administrator_cannot_revoke_itself(api: Api) -> None:
    admin = api.admin
    # of two administrators, neither removes the other (access changes take two)
    error = rpc_error(
        lambda: admin.call(
            admin.access.RevokeGrant,
            access_pb.RevokeGrantRequest(grant_id="admin2-admin", reason="ousted"),
        )
    )
    assert (error.code, error.reason) == (PRECONDITION, "LAST_ADMINISTRATOR")
    # admin-2 loses its token: then mee/admin is the only one who can call, and may
    # remove admin-2's grant, but never its own
    listed = admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
    [other] = [p for p in listed.principals if (p.party, p.name) == ("mee", "admin-2")]
    admin.call(
        admin.access.RevokeCredential,
        access_pb.RevokeCredentialRequest(
            credential_id=other.credentials[0].credential_id, reason="laptop lost"
        ),
    )
    admin.call(
        admin.access.RevokeGrant,
        access_pb.RevokeGrantRequest(grant_id="admin2-admin", reason="left the ministry"),
    )
    error = rpc_error(
        lambda: admin.call(
            admin.access.RevokeGrant,
            access_pb.RevokeGrantRequest(grant_id="admin-admin", reason="leaving"),
        )
    )
    assert (error.code, error.reason) == (PRECONDITION, "LAST_ADMINISTRATOR")
    listed = admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
    [me] = [p for p in listed.principals if (p.party, p.name) == ("mee", "admin")]
    [credential] = me.credentials
    error = rpc_error(
        lambda: admin.call(
            admin.access.RevokeCredential,
            access_pb.RevokeCredentialRequest(
                credential_id=credential.credential_id, reason="oops"
            ),
        )
    )
    assert (error.code, error.reason) == (PRECONDITION, "LAST_ADMINISTRATOR")
    assert admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())


def test_reasons_grant_ids_and_party_system_are_checked(api: Api) -> None:
    """Item 10: a reason with control characters, a revoked grant id reused for another
    principal, and party ``system`` were all accepted."""
    admin = api.admin
    head = head_position(api.regulator)
    for reason in ("ok\x1b[2Jcleared", "nul\x00", "bell\x07"):
        error = rpc_error(
            lambda r=reason: grant(admin, "aud-x", "nao", "aud-x", access_pb.ROLE_AUDITOR, reason=r)
        )
        assert (error.code, error.reason) == (INVALID, "INVALID_REASON")
    for call in (
        lambda: token_for(admin, "system", "bootstrap"),
        lambda: grant(admin, "sys", "system", "tests", access_pb.ROLE_AUDITOR),
    ):
        error = rpc_error(call)
        assert (error.code, error.reason) == (INVALID, "RESERVED_PARTY")
    assert head_position(api.regulator) == head
    grant(admin, "aud-1", "nao", "auditor-qian", access_pb.ROLE_AUDITOR)  # one admin
    admin.call(
        admin.access.RevokeGrant, access_pb.RevokeGrantRequest(grant_id="aud-1", reason="left")
    )
    error = rpc_error(lambda: grant(admin, "aud-1", "nao", "auditor-sun", access_pb.ROLE_AUDITOR))
    assert (error.code, error.reason) == (PRECONDITION, "ACCESS_CHANGE_REFUSED")


def test_an_administrator_cannot_take_another_s_identity_with_a_second_token(api: Api) -> None:
    """With the other administrator's or two regulators' extra tokens, one administrator
    would approve its own grants and proposals: a privileged principal holding a token
    gets no second one; a rotation replaces it (the holder's token stops, visibly)."""
    admin = api.admin
    for party, name in (
        ("mee", "admin-2"),
        ("mee", "regulator-li"),
        ("mee", "regulator-wang"),
        ("shanghai-exchange", "settlement"),
    ):
        error = rpc_error(lambda p=party, n=name: token_for(admin, p, n))
        assert (error.code, error.reason) == (PRECONDITION, "SEPARATION_OF_DUTIES"), name
    # the four-eyes grant path still works end to end: grant, approve, first token
    grant(admin, "qian-reg", "mee", "regulator-qian", access_pb.ROLE_REGULATOR)
    grant(api.admin2, "qian-reg", "mee", "regulator-qian", access_pb.ROLE_REGULATOR)
    with RegistryClient(api.address, token_for(admin, "mee", "regulator-qian"), attempts=1) as qian:
        assert qian.balances(COMPANY) is not None

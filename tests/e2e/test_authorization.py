"""Authorisation over a real channel: the matrix generated from the policy table (every
method x every role x an own and another holder's account gets exactly allow or
PERMISSION_DENIED), an operator never reaching another holder's units, and grants and
tokens changed through AccessService taking effect on the very next call.

The matrix checks the server enforces its table; it cannot say the table is right (its
expected answers come from that table). tests/e2e/test_never_allowed.py does: a
hand-written table of what each role must never do, from docs/security.md."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from registry.client import RegistryClient
from registry.domain.access import SCOPED_ROLES, Role
from registry.domain.transactions import Principal
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as account_pb
from services.policy import EVERY, POLICY
from tests.e2e.conftest import Api, rpc_error, running_api
from tests.e2e.market import ALLOCATIONS, balance, caught_up, head_position, seed_market

OWN, OTHER = sorted(ALLOCATIONS)  # two companies of the seeded market
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def matrix_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, dict[Role, str]]]:
    """A seeded market and one principal per role (the scoped ones over OWN only)."""
    with running_api("sqlite", tmp_path_factory.mktemp("authz")) as api:
        seed_market(api.regulator)
        caught_up(api.regulator)
        system = Principal("system", "tests")
        tokens = {}
        for role in Role:
            principal = Principal("matrix", role.value)
            api.registry.access.grant_role(
                system,
                f"matrix-{role}",
                principal,
                role.value,
                (OWN,) if role in SCOPED_ROLES else (),
                "matrix",
            )
            tokens[role] = api.registry.access.issue_token(system, principal, "matrix").token
        yield api, tokens


def request_for(method: str, account: str) -> tuple[Any, bool]:
    """An otherwise empty request of ``method`` that names ``account`` wherever the
    message has an account field; and whether the method streams."""
    service, name = method.split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    request = message_factory.GetMessageClass(descriptor.input_type)()
    fields = request.DESCRIPTOR.fields_by_name
    if "account_id" in fields:
        request.account_id = account
    if "account_ids" in fields:
        request.account_ids.append(account)
    if "source_account_id" in fields:  # a transfer acts on the account it takes from
        request.source_account_id = account
    if "trades" in fields:
        request.trades.add(seller_account=account, buyer_account=account)
    if "max_events" in fields:
        request.max_events = 1
    return request, descriptor.server_streaming


def expected_allowed(method: str, role: Role, case: str, request: Any) -> bool:
    """From the policy table alone: the role may call the method, and a scoped role
    only on its own accounts, never on every account."""
    rule = POLICY[method]
    if role not in rule.roles:
        return False
    if role not in SCOPED_ROLES or rule.accounts is None:
        return True
    return case == "own" and EVERY not in rule.accounts(request)


CASES = [
    (method, role, case) for method in sorted(POLICY) for role in Role for case in ("own", "other")
]


def test_the_matrix_covers_every_method_and_role() -> None:
    assert len(CASES) == len(POLICY) * len(Role) * 2 and len(POLICY) == 56


@pytest.mark.parametrize(
    ("method", "role", "case"), CASES, ids=[f"{m.split('/')[1]}-{r}-{c}" for m, r, c in CASES]
)
def test_each_method_role_and_account_is_allowed_or_denied_as_the_policy_says(
    matrix_api: tuple[Api, dict[Role, str]], method: str, role: Role, case: str
) -> None:
    api, tokens = matrix_api
    request, streaming = request_for(method, OWN if case == "own" else OTHER)
    with grpc.insecure_channel(api.address) as channel:
        call = (channel.unary_stream if streaming else channel.unary_unary)(
            f"/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda data: data,
        )
        try:
            reply = call(
                request, metadata=(("authorization", f"Bearer {tokens[role]}"),), timeout=20
            )
            if streaming:
                list(reply)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
    assert code is not grpc.StatusCode.UNAUTHENTICATED
    if expected_allowed(method, role, case, request):
        assert code is not DENIED, "allowed by the policy but denied"
    else:
        assert code is DENIED, f"denied by the policy but answered {code.name}"


def test_an_operator_never_reads_or_moves_another_holders_units(
    matrix_api: tuple[Api, dict[Role, str]], caplog: pytest.LogCaptureFixture
) -> None:
    api, tokens = matrix_api
    operator = api.client(tokens[Role.OPERATOR])
    head = head_position(api.regulator)
    before = balance(api.regulator, OTHER, head)
    attempts = {
        "GetBalances": lambda: operator.balances(OTHER),
        "ListTransactions": lambda: list(operator.transactions(OTHER)),
        "GetAccount": lambda: operator.call(
            operator.accounts.GetAccount, account_pb.GetAccountRequest(account_id=OTHER)
        ),
        "SurrenderUnits": lambda: operator.call(
            operator.accounts.SurrenderUnits,
            account_pb.SurrenderUnitsRequest(
                transaction_id="S-X",
                account_id=OTHER,
                unit_type=1,
                quantity=10,
                compliance_year=2025,
            ),
        ),
        "CancelUnits": lambda: operator.call(
            operator.accounts.CancelUnits,
            account_pb.CancelUnitsRequest(
                transaction_id="C-X", account_id=OTHER, unit_type=1, quantity=10
            ),
        ),
        "TransferUnits": lambda: operator.call(
            operator.accounts.TransferUnits,
            account_pb.TransferUnitsRequest(
                transaction_id="M-X",
                source_account_id=OTHER,
                destination_account_id=OWN,
                unit_type=1,
                quantity=10,
                reason="take it",
            ),
        ),
        "StreamEvents": lambda: list(operator.stream_events(account_id=OTHER)),
    }
    with caplog.at_level(logging.INFO, logger="registry.api"):
        for name, attempt in attempts.items():
            error = rpc_error(attempt)
            assert error.code is DENIED, name
            assert error.reason in ("ACCOUNT_NOT_IN_SCOPE", "ROLE_NOT_GRANTED"), name
    # every attempt is logged with who tried, and nothing changed
    denied = [r.getMessage() for r in caplog.records if "PERMISSION_DENIED" in r.getMessage()]
    assert len(denied) == len(attempts) and all("matrix/operator" in line for line in denied)
    assert head_position(api.regulator) == head
    assert balance(api.regulator, OTHER, head) == before
    assert operator.balances(OWN)  # its own account it may read


def test_tokens_and_grants_changed_by_an_administrator_apply_to_the_next_call(api: Api) -> None:
    admin = api.admin
    seed_market(api.regulator)
    caught_up(api.regulator)
    issued = admin.call(
        admin.access.IssueToken,
        access_pb.IssueTokenRequest(party="datang", name="desk", reason="a new operator desk"),
    )
    assert issued.token.startswith(issued.credential_id + ".")
    grant = access_pb.GrantRoleRequest(
        grant_id="datang-desk",
        party="datang",
        name="desk",
        role=access_pb.ROLE_OPERATOR,
        account_ids=[OWN],
        reason="runs the plant",
    )
    proposed = admin.call(admin.access.GrantRole, grant)
    assert (proposed.pending, proposed.proposed_by) == (True, "mee/admin")
    with RegistryClient(api.address, issued.token, attempts=1) as desk:
        # four eyes: not in effect until a second administrator approves it
        assert rpc_error(lambda: desk.balances(OWN)).reason == "ROLE_NOT_GRANTED"
        granted = api.admin2.call(api.admin2.access.GrantRole, grant)
        assert (granted.pending, granted.replayed, granted.approved_by) == (
            False,
            False,
            "mee/admin-2",
        )
        assert desk.balances(OWN)
        # rotated: the old token stops at once, the new one works
        rotated = admin.call(
            admin.access.RotateToken,
            access_pb.RotateTokenRequest(
                credential_id=issued.credential_id, reason="quarterly rotation"
            ),
        )
        assert rpc_error(lambda: desk.balances(OWN)).reason == "INVALID_CREDENTIALS"
    with RegistryClient(api.address, rotated.token, attempts=1) as desk:
        assert desk.balances(OWN)
        # the grant withdrawn: authenticated still, but no longer allowed
        admin.call(
            admin.access.RevokeGrant,
            access_pb.RevokeGrantRequest(grant_id="datang-desk", reason="moved to another company"),
        )
        assert rpc_error(lambda: desk.balances(OWN)).reason == "ROLE_NOT_GRANTED"
        # and revoked: refused before anything else
        admin.call(
            admin.access.RevokeCredential,
            access_pb.RevokeCredentialRequest(credential_id=rotated.credential_id, reason="left"),
        )
        assert rpc_error(lambda: desk.balances(OWN)).reason == "INVALID_CREDENTIALS"
    listed = admin.call(admin.access.ListPrincipals, access_pb.ListPrincipalsRequest())
    [desk_entry] = [p for p in listed.principals if (p.party, p.name) == ("datang", "desk")]
    assert [c.revoked for c in desk_entry.credentials] == [True, True]
    assert list(desk_entry.grants) == []
    # an administrator moves no units and reads no balances
    assert rpc_error(lambda: admin.balances(OWN)).reason == "ROLE_NOT_GRANTED"
    # and only an administrator manages access
    error = rpc_error(
        lambda: api.regulator.call(
            api.regulator.access.IssueToken,
            access_pb.IssueTokenRequest(party="mee", name="shadow", reason="x"),
        )
    )
    assert (error.code, error.reason) == (DENIED, "ROLE_NOT_GRANTED")

"""What each role must never do, written out by hand from docs/security.md ("Principals,
roles and grants", "Separation of duties") and the design's services, and checked
against a live server over a real gRPC channel: every entry is refused with
PERMISSION_DENIED and changes nothing (the event store's head position, read from the
store itself, is where it was).

tests/e2e/test_authorization.py takes its expected answers from ``services.policy.POLICY``,
the table the server enforces, so a wrong entry there (say, ``IssueUnits`` opened to the
exchange) passes it. This table is independent of the policy: nothing here is computed
from it. Each request is a real one (an issuance, an allocation to an allocated company,
a surrender of units it holds, ...), so an entry wrongly opened would do what it says,
and the control test shows that the rightful role is not refused the same request.

The principals hold the widest grant their role can have: the exchange ``*`` (every
account), the operator its own company, ``OWN``; the others are unscoped."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.timestamp_pb2 import Timestamp

from registry.client import error_details
from registry.domain.access import Role
from registry.domain.transactions import Principal
from registry.v1 import access_service_pb2 as access_pb
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common
from registry.v1 import settlement_service_pb2 as settlement_pb
from tests.e2e.conftest import Api, running_api
from tests.e2e.market import (
    ALLOCATIONS,
    CEA,
    CEA_2025,
    TRADER,
    allocation,
    caught_up,
    emissions,
    project_details,
    reverse,
    seed_market,
    surrender,
    trade,
)
from tests.e2e.market import cancel as cancel_request
from tests.tls_material import write_tls_material

OWN, OTHER = sorted(ALLOCATIONS)
DENIED = grpc.StatusCode.PERMISSION_DENIED
PARTY = "never"
HOLD = "H-NEVER"
PROPOSAL = "P-NEVER"

# -- the table, by hand ------------------------------------------------------------------

REGULATOR_ACTIONS = (
    # "regulator: administration, proposals and approvals"; issuance, allocation,
    # reversal, freezes and four eyes are a regulator's alone (DESIGN: AdministrationService)
    "OpenAccount",
    "FreezeAccount",
    "UnfreezeAccount",
    "CloseAccount",
    "IssueUnits",
    "AllocateUnits",
    "ReverseTransaction",
    "RecordVerifiedEmissions",
    "SetComplianceRules",
    "CloseComplianceYear",
    "ProposeAction",
    "ApproveProposal",
    "RejectProposal",
    "ExpireProposals",
    "RecordComplianceFine",
    "EnforceDeductions",
    "RegisterProject",
    "UpdateProject",
    "SuspendProject",
    "ReinstateProject",
    "DeregisterProject",
)
SETTLEMENT_WRITES = ("PlaceHold", "ReleaseHold", "SettleTrades")
HOLDER_WRITES = ("SurrenderUnits", "CancelUnits", "TransferUnits", "SubmitRebuttal")
ACCESS_WRITES = (
    "GrantRole",
    "RevokeGrant",
    "IssueToken",
    "RotateToken",
    "RevokeCredential",
    "RegisterCertificate",
)
"""Principal management: "admin: principal management only (AccessService)"."""
READS = (
    # "admin: ... no unit movement, no reads": balances, accounts, history, positions,
    # holds, trades, the event stream, supply, reports, rules, proposals, the digest
    "GetBalances",
    "GetAccount",
    "ListAccounts",
    "ListTransactions",
    "GetComplianceStatus",
    "ListPositions",
    "GetHold",
    "GetTrade",
    "StreamEvents",
    "GetAccountHistory",
    "GetBalancesAsOf",
    "TraceSerial",
    "GetSupply",
    "GetComplianceReport",
    "GetLedgerDigest",
    "GetComplianceRules",
    "GetProposal",
    "ListProposals",
    "ListRestrictions",
    "GetProject",
    "ListProjects",
)

NEVER: dict[Role, tuple[tuple[str, str], ...]] = {
    # an exchange settles; it never surrenders or cancels for a holder, never administers
    # the scheme and never manages access (even with a `*` grant)
    Role.EXCHANGE: tuple(
        (m, OWN) for m in (*REGULATOR_ACTIONS, *HOLDER_WRITES, *ACCESS_WRITES, "ListPrincipals")
    ),
    # an operator reads its accounts, surrenders and cancels: it never settles (not even
    # on its own accounts), never administers, and never acts outside its accounts
    Role.OPERATOR: (
        *(
            (m, OWN)
            for m in (
                *REGULATOR_ACTIONS,
                *SETTLEMENT_WRITES,
                *ACCESS_WRITES,
                "ListPrincipals",
                "ListPositions",
                "StreamEvents",
            )
        ),
        *(
            (m, OTHER)
            for m in (
                "GetBalances",
                "GetAccount",
                "ListTransactions",
                "GetComplianceStatus",
                "SurrenderUnits",
                "CancelUnits",
                "TransferUnits",  # out of another's account, even to its own
                "SubmitRebuttal",
            )
        ),
        ("ListAccounts", OWN),  # ranges over every account
    ),
    # "auditor: every read, no write"
    Role.AUDITOR: tuple(
        (m, OWN) for m in (*REGULATOR_ACTIONS, *SETTLEMENT_WRITES, *HOLDER_WRITES, *ACCESS_WRITES)
    ),
    # "admin: principal management only; no unit movement, no reads", "nor administrators
    # a ledger action"
    Role.ADMIN: tuple(
        (m, OWN) for m in (*REGULATOR_ACTIONS, *SETTLEMENT_WRITES, *HOLDER_WRITES, *READS)
    ),
    # "Regulators can neither propose nor decide a ROLE_GRANT": access is the admins'
    Role.REGULATOR: tuple((m, OWN) for m in (*ACCESS_WRITES, "ListPrincipals")),
}

SERVICES = {
    "registry.v1.SettlementService": (*SETTLEMENT_WRITES, "GetHold", "GetTrade", "ListPositions"),
    "registry.v1.AccountService": (
        "GetAccount",
        "ListAccounts",
        "GetBalances",
        "ListTransactions",
        *HOLDER_WRITES,
        "GetComplianceStatus",
    ),
    "registry.v1.AdministrationService": (
        *REGULATOR_ACTIONS,
        "GetComplianceRules",
        "GetProposal",
        "ListProposals",
        "GetProject",
        "ListProjects",
    ),
    "registry.v1.AuditService": (
        "StreamEvents",
        "GetAccountHistory",
        "GetBalancesAsOf",
        "TraceSerial",
        "GetSupply",
        "GetComplianceReport",
        "GetLedgerDigest",
        "ListRestrictions",
    ),
    "registry.v1.AccessService": (*ACCESS_WRITES, "ListPrincipals"),
}
SERVICE_OF = {method: service for service, methods in SERVICES.items() for method in methods}

RIGHTFUL: dict[str, Role] = {
    **dict.fromkeys(REGULATOR_ACTIONS, Role.REGULATOR),
    **dict.fromkeys(SETTLEMENT_WRITES, Role.EXCHANGE),
    **dict.fromkeys(HOLDER_WRITES, Role.OPERATOR),
    **dict.fromkeys((*ACCESS_WRITES, "ListPrincipals"), Role.ADMIN),
    **dict.fromkeys(READS, Role.AUDITOR),
    "GetHold": Role.EXCHANGE,  # a hold is found under the caller's party: an exchange's
}
"""Who may make each request (the control: the requests are real, not refused for
being malformed or by everybody)."""

CASES = [(role, method, account) for role, entries in NEVER.items() for method, account in entries]


# -- real requests -------------------------------------------------------------------------


def requests(
    account: str, spares: tuple[str, str], certificate: str
) -> dict[str, Callable[[], Any]]:
    """Each method's request, acting on ``account`` where it names one; ``spares`` are
    two auditors' credentials, to rotate and to revoke."""
    year = 2025
    rules = admin_pb.ComplianceRules(
        ccer_cap_bps=500, advance_use_bps=0, surrender_deadline="2026-12-31"
    )
    payload = {
        "transaction_id": "ISS-NEVER-P",
        "unit_type": "CEA",
        "vintage": year,
        "quantity": 1_000,
        "reason": "proposed issuance",
    }
    return {
        "OpenAccount": lambda: admin_pb.OpenAccountRequest(
            account_id="PWR-SD-0099",
            account_type=common.ACCOUNT_TYPE_COMPLIANCE,
            holder=common.Holder(
                name="Shadow Power Co.",
                credit_code="91370000163081422B",
                sector=common.SECTOR_POWER,
                province="Shandong",
            ),
        ),
        "FreezeAccount": lambda: admin_pb.FreezeAccountRequest(
            request_id="FRZ-NEVER", account_id=account, reason="court order"
        ),
        "UnfreezeAccount": lambda: admin_pb.UnfreezeAccountRequest(
            request_id="UNF-NEVER", account_id=account, reason="order lifted"
        ),
        "CloseAccount": lambda: admin_pb.CloseAccountRequest(
            request_id="CLS-NEVER", account_id=TRADER, reason="holder dissolved"
        ),
        "IssueUnits": lambda: admin_pb.IssueUnitsRequest(
            transaction_id="ISS-NEVER", unit_class=CEA_2025, quantity=1_000, reason="issuance"
        ),
        "AllocateUnits": lambda: admin_pb.AllocateUnitsRequest(
            rows=[allocation("ALLOC-NEVER", account, 1_000)]
        ),
        "ReverseTransaction": lambda: reverse("REV-NEVER", "mee", f"ALLOC-2025-{OTHER}"),
        "RecordVerifiedEmissions": lambda: admin_pb.RecordVerifiedEmissionsRequest(
            rows=[emissions(account, 90_000)]
        ),
        "SetComplianceRules": lambda: admin_pb.SetComplianceRulesRequest(
            compliance_year=year, sector="*", rules=rules, reason="rules for 2025"
        ),
        "CloseComplianceYear": lambda: admin_pb.CloseComplianceYearRequest(
            compliance_year=year, reason="deadline passed"
        ),
        "ProposeAction": lambda: admin_pb.ProposeActionRequest(
            proposal_id="P-NEVER-2",
            kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
            payload_json=json.dumps(payload),
            reason="2025 plan",
        ),
        "ApproveProposal": lambda: admin_pb.ApproveProposalRequest(
            party="mee", proposal_id=PROPOSAL
        ),
        "RejectProposal": lambda: admin_pb.RejectProposalRequest(
            party="mee", proposal_id=PROPOSAL, reason="not in the plan"
        ),
        "ExpireProposals": lambda: admin_pb.ExpireProposalsRequest(),
        "RecordComplianceFine": lambda: admin_pb.RecordComplianceFineRequest(
            account_id=account,
            compliance_year=year,
            multiple="5",
            reference_price="90.00",
            reason="order 2026-17",
        ),
        "EnforceDeductions": lambda: admin_pb.EnforceDeductionsRequest(
            compliance_year=year, reason="correction deadline passed"
        ),
        "RegisterProject": lambda: admin_pb.RegisterProjectRequest(
            project_id="P-NEVER",
            details=project_details(account),
            reason="validated",
            reference="REG-NEVER",
        ),
        "UpdateProject": lambda: admin_pb.UpdateProjectRequest(
            project_id="P-NEVER",
            details=project_details(account),
            reason="new owner",
            reference="UPD-NEVER",
        ),
        "SuspendProject": lambda: admin_pb.SuspendProjectRequest(
            project_id="P-NEVER", reason="lapsed", reference="SUS-NEVER"
        ),
        "ReinstateProject": lambda: admin_pb.ReinstateProjectRequest(
            project_id="P-NEVER", reason="re-verified", reference="REI-NEVER"
        ),
        "DeregisterProject": lambda: admin_pb.DeregisterProjectRequest(
            project_id="P-NEVER", reason="withdrawn", reference="DER-NEVER"
        ),
        "GetProject": lambda: admin_pb.GetProjectRequest(project_id="P-NEVER"),
        "ListProjects": lambda: admin_pb.ListProjectsRequest(),
        "GetComplianceRules": lambda: admin_pb.GetComplianceRulesRequest(compliance_year=year),
        "GetProposal": lambda: admin_pb.GetProposalRequest(party="mee", proposal_id=PROPOSAL),
        "ListProposals": lambda: admin_pb.ListProposalsRequest(),
        "PlaceHold": lambda: settlement_pb.PlaceHoldRequest(
            hold_id="H-NEVER-2",
            account_id=account,
            unit_type=CEA,
            vintage=year,
            quantity=10,
            timeout_seconds=600,
        ),
        "ReleaseHold": lambda: settlement_pb.ReleaseHoldRequest(
            hold_id=HOLD, reason="order cancelled"
        ),
        "SettleTrades": lambda: settlement_pb.SettleTradesRequest(
            trades=[trade("T-NEVER", account, TRADER, 10)]
        ),
        "GetHold": lambda: settlement_pb.GetHoldRequest(hold_id=HOLD),
        "GetTrade": lambda: settlement_pb.GetTradeRequest(trade_id=f"ALLOC-2025-{OWN}"),
        "ListPositions": lambda: settlement_pb.ListPositionsRequest(account_ids=[account]),
        "GetAccount": lambda: account_pb.GetAccountRequest(account_id=account),
        "ListAccounts": lambda: account_pb.ListAccountsRequest(),
        "GetBalances": lambda: account_pb.GetBalancesRequest(account_id=account),
        "ListTransactions": lambda: account_pb.ListTransactionsRequest(account_id=account),
        "SurrenderUnits": lambda: surrender("SUR-NEVER", account, 10),
        "CancelUnits": lambda: cancel_request("CAN-NEVER", account, 10),
        "TransferUnits": lambda: account_pb.TransferUnitsRequest(
            transaction_id="MOVE-NEVER",
            source_account_id=account,
            destination_account_id=OTHER if account == OWN else OWN,  # one holder's two
            unit_type=CEA,
            vintage=year,
            quantity=10,
            reason="consolidate holdings",
        ),
        "GetComplianceStatus": lambda: account_pb.GetComplianceStatusRequest(
            account_id=account, compliance_year=year
        ),
        "StreamEvents": lambda: audit_pb.StreamEventsRequest(account_id=account, max_events=1),
        "GetAccountHistory": lambda: audit_pb.GetAccountHistoryRequest(account_id=account),
        "GetBalancesAsOf": lambda: audit_pb.GetBalancesAsOfRequest(
            account_id=account, as_of_time=Timestamp(seconds=int(time.time()))
        ),
        "TraceSerial": lambda: audit_pb.TraceSerialRequest(unit_class=CEA_2025, serial=1),
        "GetSupply": lambda: audit_pb.GetSupplyRequest(),
        "GetComplianceReport": lambda: audit_pb.GetComplianceReportRequest(compliance_year=year),
        "GetLedgerDigest": lambda: audit_pb.GetLedgerDigestRequest(),
        "ListRestrictions": lambda: audit_pb.ListRestrictionsRequest(),
        "SubmitRebuttal": lambda: account_pb.SubmitRebuttalRequest(
            origin="P-NEVER",
            account_id=account,
            rebuttal_id="R-NEVER",
            statement="never detained",
            evidence_sha256=["a" * 64],
        ),
        "GrantRole": lambda: access_pb.GrantRoleRequest(
            grant_id="shadow-auditor",
            party=PARTY,
            name="shadow",
            role=access_pb.ROLE_AUDITOR,
            reason="a shadow reader",
        ),
        "RevokeGrant": lambda: access_pb.RevokeGrantRequest(
            grant_id=f"{PARTY}-{Role.OPERATOR}", reason="ousted"
        ),
        "IssueToken": lambda: access_pb.IssueTokenRequest(
            party=PARTY, name="shadow", reason="a shadow desk"
        ),
        "RotateToken": lambda: access_pb.RotateTokenRequest(
            credential_id=spares[0], reason="taken over"
        ),
        "RevokeCredential": lambda: access_pb.RevokeCredentialRequest(
            credential_id=spares[1], reason="locked out"
        ),
        "RegisterCertificate": lambda: access_pb.RegisterCertificateRequest(
            party=PARTY, name="shadow", certificate_pem=certificate, reason="a shadow key"
        ),
        "ListPrincipals": lambda: access_pb.ListPrincipalsRequest(),
    }


def call(address: str, token: str, method: str, request: Any) -> grpc.RpcError | None:
    """Call ``method`` over a fresh channel with ``token``; its error, or None."""
    name = f"{SERVICE_OF[method]}/{method}"
    descriptor = (
        descriptor_pool.Default().FindServiceByName(SERVICE_OF[method]).methods_by_name[method]
    )
    with grpc.insecure_channel(address) as channel:
        stub = (channel.unary_stream if descriptor.server_streaming else channel.unary_unary)(
            f"/{name}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda data: data,
        )
        try:
            reply = stub(request, metadata=(("authorization", f"Bearer {token}"),), timeout=20)
            if descriptor.server_streaming:
                list(reply)
        except grpc.RpcError as error:
            return error
    return None


class Scene:
    """A seeded market with one principal per role, a pending proposal and a hold."""

    def __init__(self, api: Api, tmp_path: Path) -> None:
        self.api = api
        seed_market(api.regulator)
        system = Principal("system", "tests")
        self.tokens: dict[Role, str] = {}
        scopes = {Role.EXCHANGE: ("*",), Role.OPERATOR: (OWN,)}
        for role in Role:
            principal = Principal(PARTY, role.value)
            api.registry.access.grant_role(
                system,
                f"{PARTY}-{role}",
                principal,
                role.value,
                scopes.get(role, ()),
                "never-allowed table",
            )
            issued = api.registry.access.issue_token(system, principal, "never-allowed table")
            self.tokens[role] = issued.token
        self.spares = tuple(self._spare(system, Principal(PARTY, f"spare-{n}")) for n in (1, 2))
        api.regulator.call(
            api.regulator.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id=PROPOSAL,
                kind=admin_pb.PROPOSAL_KIND_ISSUANCE,
                reason="2025 plan",
                payload_json=json.dumps(
                    {
                        "transaction_id": "ISS-P-NEVER",
                        "unit_type": "CEA",
                        "vintage": 2025,
                        "quantity": 100,
                        "reason": "plan",
                    }
                ),
            ),
        )
        placed = call(
            api.address,
            self.tokens[Role.EXCHANGE],
            "PlaceHold",
            settlement_pb.PlaceHoldRequest(
                hold_id=HOLD,
                account_id=OWN,
                unit_type=CEA,
                vintage=2025,
                quantity=10,
                timeout_seconds=3600,
            ),
        )
        assert placed is None, placed
        caught_up(api.regulator)
        self.certificate = write_tls_material(tmp_path / "tls").client.cert.read_text()

    def _spare(self, system: Principal, principal: Principal) -> str:
        self.api.registry.access.grant_role(
            system,
            f"{principal.name}-auditor",
            principal,
            Role.AUDITOR.value,
            (),
            "never-allowed table",
        )
        return self.api.registry.access.issue_token(system, principal, "spare").credential_id

    def head(self) -> int:
        """The event store's head, from the store, not from the server's answers."""
        return int(self.api.registry.recorder.max_notification_id() or 0)

    def request(self, method: str, account: str) -> Any:
        spares = (self.spares[0], self.spares[1])
        return requests(account, spares, self.certificate)[method]()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    if request.param == "postgres":
        request.applymarker(pytest.mark.postgres)
    tmp_path = tmp_path_factory.mktemp("never")
    with running_api(request.param, tmp_path) as api:
        yield Scene(api, tmp_path)


def test_the_table_names_only_real_methods_and_each_role() -> None:
    served = {
        method.name
        for service in SERVICES
        for method in descriptor_pool.Default().FindServiceByName(service).methods
    }
    assert set(SERVICE_OF) == served
    assert {method for _, method, _ in CASES} <= served
    assert set(NEVER) == set(Role) and len(CASES) == len(set(CASES))


@pytest.mark.parametrize(
    ("role", "method", "account"),
    CASES,
    ids=[f"{r}-{m}-{'own' if a == OWN else 'other'}" for r, m, a in CASES],
)
def test_a_role_is_refused_what_it_must_never_do_and_nothing_changes(
    scene: Scene, role: Role, method: str, account: str
) -> None:
    before = scene.head()
    error = call(scene.api.address, scene.tokens[role], method, scene.request(method, account))
    assert error is not None, f"{role} was allowed {method}"
    details = error_details(error)
    assert details.code is DENIED, f"{role} {method}: {details.code.name} {details.reason}"
    assert details.reason in ("ROLE_NOT_GRANTED", "ACCOUNT_NOT_IN_SCOPE"), details
    assert scene.head() == before


def test_the_rightful_role_is_not_refused_the_same_requests(tmp_path: Path) -> None:
    """The control: each request of the table, made by the role it belongs to, passes
    authorisation (on a scene of its own, as these calls change the ledger)."""
    with running_api("sqlite", tmp_path) as api:
        scene = Scene(api, tmp_path)
        refused = {}
        for method, role in RIGHTFUL.items():
            error = call(api.address, scene.tokens[role], method, scene.request(method, OWN))
            if error is not None and error.code() in (
                DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                refused[method] = (role, error_details(error))
        assert refused == {}

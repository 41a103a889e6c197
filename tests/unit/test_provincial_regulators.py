"""Provincial regulators (issue 18 item 8): a regulator grant scoped to provinces acts
only for the companies of its provinces, and does no national act.

Source: the provincial ecology and environment departments verify the annual emissions
reports of the companies whose site is in their province and notify the result, which is
the basis of surrender (MEE, Measures for the Administration of Carbon Emissions Trading
(Trial), 2020, Arts. 25-26; State Council, Interim Regulations, 2024, Arts. 11-12). Pure:
the policy with a fake jurisdiction, no server."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from registry.domain.access import AccessControl, Role, check_accounts, check_provinces
from registry.domain.errors import InvalidCommand
from registry.domain.proposals import Proposal, ProposalKind, ProposalView
from registry.domain.transactions import Principal
from registry.v1 import administration_service_pb2 as admin_pb
from services.errors import ApiError
from services.policy import FOUR_EYES, POLICY, PROVINCIAL, authorize

NOW = datetime(2026, 6, 15, 9, 30, tzinfo=UTC)
SD = Principal("sd-eeb", "verifier-zhang")  # Shandong department
NAT = Principal("mee", "regulator-li")
ADM = "/registry.v1.AdministrationService/"
ACC = "/registry.v1.AccountService/"
ACCOUNTS = {"PWR-SD-0001": "Shandong", "PWR-GD-0001": "Guangdong", "TRD-0001": None}


class FakeJurisdiction:
    def __init__(self, proposals: Mapping[str, ProposalView] | None = None) -> None:
        self.proposals = dict(proposals or {})
        self.looked_up: list[str] = []

    def provinces_of(self, account_ids: Sequence[str]) -> dict[str, str | None]:
        self.looked_up += account_ids
        return {a: ACCOUNTS.get(a) for a in account_ids}

    def proposal(self, party: str, proposal_id: str) -> ProposalView | None:
        return self.proposals.get(f"{party}:{proposal_id}")


def acl() -> AccessControl:
    control = AccessControl.start()
    for grant_id, who, provinces in (("g-sd", SD, ("shandong",)), ("g-nat", NAT, ())):
        control.grant(
            grant_id,
            who,
            Role.REGULATOR,
            check_accounts(Role.REGULATOR, ()),
            Principal("system", "tests"),
            "test",
            NOW,
            provinces=check_provinces(Role.REGULATOR, provinces),
        )
    return control


def denial(method: str, request: Any, jurisdiction: FakeJurisdiction | None = None) -> str:
    with pytest.raises(ApiError) as raised:
        authorize(method, request, SD, acl(), jurisdiction or FakeJurisdiction())
    assert raised.value.code.name == "PERMISSION_DENIED"
    return raised.value.reason


def emissions(*accounts: str) -> admin_pb.RecordVerifiedEmissionsRequest:
    return admin_pb.RecordVerifiedEmissionsRequest(
        rows=[
            admin_pb.VerifiedEmissionsRow(account_id=a, compliance_year=2025, verified_emissions=1)
            for a in accounts
        ]
    )


def proposal(kind: ProposalKind, payload: dict[str, Any]) -> ProposalView:
    return Proposal.propose(
        proposal_id="P-1", kind=kind, payload=payload, reason="r", principal=NAT, now=NOW
    ).view()


def test_a_grant_names_provinces_only_for_a_regulator_each_once() -> None:
    assert check_provinces(Role.REGULATOR, ()) == ()
    assert check_provinces(Role.REGULATOR, [" Shandong", "Hebei"]) == ("Hebei", "Shandong")
    for role, provinces in (
        (Role.AUDITOR, ["Shandong"]),
        (Role.OPERATOR, ["Shandong"]),
        (Role.REGULATOR, ["Shandong", "SHANDONG"]),
        (Role.REGULATOR, ["Shandong", "\x00"]),
        (Role.REGULATOR, ["x" * 65]),
        (Role.REGULATOR, [f"P{i}" for i in range(35)]),
    ):
        with pytest.raises(InvalidCommand) as raised:
            check_provinces(role, provinces)
        assert raised.value.metadata["field"] == "provinces"


def test_the_grant_covers_its_provinces_case_insensitively_and_no_account_without_one() -> None:
    [grant] = acl().grants_of(SD)
    assert grant.provincial and grant.provinces == ("shandong",)
    assert grant.covers_province("Shandong") and grant.covers_province(" SHANDONG")
    assert not grant.covers_province("Guangdong") and not grant.covers_province(None)
    assert acl().provinces_of(SD) == ("shandong",) and acl().provinces_of(NAT) == ()


def test_a_provincial_regulator_records_verified_emissions_of_its_companies_only() -> None:
    method = ADM + "RecordVerifiedEmissions"
    authorize(method, emissions("PWR-SD-0001"), SD, acl(), FakeJurisdiction())
    assert denial(method, emissions("PWR-SD-0001", "PWR-GD-0001")) == "ACCOUNT_NOT_IN_PROVINCE"
    assert denial(method, emissions("TRD-0001")) == "ACCOUNT_NOT_IN_PROVINCE"  # no province
    assert denial(method, emissions("PWR-XX-9999")) == "ACCOUNT_NOT_IN_PROVINCE"  # unknown
    authorize(method, emissions("PWR-GD-0001"), NAT, acl(), FakeJurisdiction())  # national


def test_and_reads_the_compliance_status_of_its_companies_only() -> None:
    status = ACC + "GetComplianceStatus"
    here = SimpleNamespace(account_id="PWR-SD-0001", compliance_year=2025)
    authorize(status, here, SD, acl(), FakeJurisdiction())
    elsewhere = SimpleNamespace(account_id="PWR-GD-0001", compliance_year=2025)
    assert denial(status, elsewhere) == "ACCOUNT_NOT_IN_PROVINCE"


@pytest.mark.parametrize(
    "method",
    [
        "IssueUnits",
        "AllocateUnits",
        "SetComplianceRules",
        "CloseComplianceYear",
        "FreezeAccount",
        "ReverseTransaction",
        "OpenAccount",
        "ExpireProposals",
    ],
)
def test_national_acts_are_refused(method: str) -> None:
    request = getattr(admin_pb, f"{method}Request")()
    assert denial(ADM + method, request) == "NATIONAL_ACT"


def test_national_reads_are_refused() -> None:
    for method in (
        "/registry.v1.AccountService/ListAccounts",
        "/registry.v1.AuditService/StreamEvents",
        "/registry.v1.AuditService/GetComplianceReport",
        "/registry.v1.SettlementService/ListPositions",
    ):
        assert denial(method, SimpleNamespace(account_ids=[])) == "NATIONAL_ACT", method


def test_it_proposes_and_decides_verified_emissions_of_its_companies_only() -> None:
    propose = ADM + "ProposeAction"

    def proposed(kind: int, *accounts: str) -> admin_pb.ProposeActionRequest:
        rows = [
            {"account_id": a, "compliance_year": 2025, "verified_emissions": 1} for a in accounts
        ]
        return admin_pb.ProposeActionRequest(
            proposal_id="P-1", kind=kind, payload_json=json.dumps({"rows": rows, "reason": "r"})
        )

    VE = admin_pb.PROPOSAL_KIND_VERIFIED_EMISSIONS
    authorize(propose, proposed(VE, "PWR-SD-0001"), SD, acl(), FakeJurisdiction())
    assert denial(propose, proposed(VE, "PWR-GD-0001")) == "ACCOUNT_NOT_IN_PROVINCE"
    assert denial(propose, proposed(admin_pb.PROPOSAL_KIND_ISSUANCE)) == "NATIONAL_ACT"
    assert denial(propose, proposed(admin_pb.PROPOSAL_KIND_YEAR_CLOSING)) == "NATIONAL_ACT"
    for no_kind in (admin_pb.PROPOSAL_KIND_UNSPECIFIED, 999):  # the servicer's INVALID_ARGUMENT
        authorize(propose, proposed(no_kind), SD, acl(), FakeJurisdiction())

    rows = {"reason": "r", "rows": [{"account_id": "PWR-SD-0001", "compliance_year": 2025}]}
    other = {"reason": "r", "rows": [{"account_id": "PWR-GD-0001", "compliance_year": 2025}]}
    jurisdiction = FakeJurisdiction(
        {
            "mee:P-SD": proposal(ProposalKind.VERIFIED_EMISSIONS, rows),
            "mee:P-GD": proposal(ProposalKind.VERIFIED_EMISSIONS, other),
            "mee:P-CLOSE": proposal(ProposalKind.YEAR_CLOSING, {"year": 2025, "reason": "r"}),
        }
    )
    for verb in ("ApproveProposal", "RejectProposal"):
        request = getattr(admin_pb, f"{verb}Request")
        authorize(ADM + verb, request(party="mee", proposal_id="P-SD"), SD, acl(), jurisdiction)
        gd = request(party="mee", proposal_id="P-GD")
        assert denial(ADM + verb, gd, jurisdiction) == "ACCOUNT_NOT_IN_PROVINCE"
        close = request(party="mee", proposal_id="P-CLOSE")
        assert denial(ADM + verb, close, jurisdiction) == "NATIONAL_ACT"
        # an unknown proposal: the servicer's NOT_FOUND, nothing to act on
        authorize(ADM + verb, request(party="mee", proposal_id="P-NONE"), SD, acl(), jurisdiction)


def test_without_a_jurisdiction_to_look_accounts_up_it_is_refused_not_let_through() -> None:
    with pytest.raises(ApiError) as raised:
        authorize(ADM + "RecordVerifiedEmissions", emissions("PWR-SD-0001"), SD, acl(), None)
    assert raised.value.reason == "ACCOUNT_NOT_IN_PROVINCE"


def test_the_provincial_table_names_regulators_methods_and_no_four_eyes_call_but_emissions() -> (
    None
):
    for method in PROVINCIAL:
        assert method in POLICY and Role.REGULATOR in POLICY[method].roles, method
    assert {m for m in FOUR_EYES if m in PROVINCIAL} == {
        "registry.v1.AdministrationService/RecordVerifiedEmissions"
    }

"""CCER projects through the application on every backend (PostgreSQL included):
registered through four eyes, issued into their owner's account only while registered
and not suspended, read back, and matched by the attributes an origin names."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from registry.application import Registry
from registry.application.projects import StatusChange
from registry.domain.accounts import AccountType, Holder
from registry.domain.errors import (
    ProjectExistsWithDifferentContent,
    ProjectOwnerNotProjectAccount,
    UnknownAccount,
    UnknownProject,
)
from registry.domain.projects import Project, ProjectDetails, ProjectQuery, ProjectStatus
from registry.domain.proposals import ProposalStatus
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import REGULATOR, assert_conserved, open_trader, register_project

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
OWNER = "PRJ-GS-0117"
WIND = UnitClass(UnitType.CCER, 2024, "P-0117")


def payload(project_id: str = "P-0117", **changes: Any) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "owner_account": OWNER,
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


def decided(registry: Registry, proposal_id: str, kind: str, body: dict[str, Any]) -> str:
    """Proposed by Li, approved by Wang; the proposal's recorded result."""
    registry.proposals.propose(LI, proposal_id, kind, body, "four eyes")
    view = registry.proposals.approve(WANG, "mee", proposal_id).proposal
    assert view.status is ProposalStatus.EXECUTED, view
    return view.result


def issue(registry: Registry, txn: str, unit_class: UnitClass = WIND, quantity: int = 100) -> str:
    """Issue; the refusal reason, or "" when it completed."""
    return registry.issue_units(REGULATOR, txn, unit_class, quantity, "issuance").refusal_reason


@pytest.fixture
def owner(registry: Registry) -> Registry:
    registry.open_account(REGULATOR, OWNER, AccountType.PROJECT, Holder("Gansu Wind Co."))
    return registry


def test_a_project_registered_by_proposal_is_issued_into_its_owner_s_account(
    owner: Registry,
) -> None:
    registry = owner
    assert issue(registry, "ISS-0") == "PROJECT_NOT_REGISTERED"  # recorded as refused
    assert decided(registry, "P-REG", "PROJECT_REGISTRATION", payload()) == (
        "project P-0117 REGISTERED"
    )
    view = registry.projects.get("P-0117")
    assert (view.status, view.details.owner_account, view.registered_by) == (
        ProjectStatus.REGISTERED,
        OWNER,
        str(WANG),  # the approver carried it out
    )
    assert view.details.crediting_start == date(2020, 1, 1)
    done = registry.issue_units(REGULATOR, "ISS-1", WIND, 300, "2024 reductions")
    assert done.ok and (done.source, done.destination) == (None, OWNER)
    assert [(h.unit_class, h.total) for h in registry.get_holdings(OWNER)] == [(WIND, 300)]
    assert registry.get_holdings("CN-ISSUANCE") == []
    # a vintage outside the crediting period
    late = UnitClass(UnitType.CCER, 2030, "P-0117")
    assert issue(registry, "ISS-2030", late) == "VINTAGE_OUTSIDE_CREDITING_PERIOD"
    # the refused issuance keeps its id: a retry gets the same refusal
    assert issue(registry, "ISS-0") == "PROJECT_NOT_REGISTERED"
    assert_conserved(registry)


def test_suspension_and_deregistration_stop_new_issuance_not_issued_units(
    owner: Registry,
) -> None:
    registry = owner
    open_trader(registry, "TRD-0001")
    decided(registry, "P-REG", "PROJECT_REGISTRATION", payload())
    assert issue(registry, "ISS-1") == ""
    status = {"project_id": "P-0117", "reason": "verification lapsed", "reference": "MEE-S-1"}
    assert decided(registry, "P-SUS", "PROJECT_SUSPENSION", status) == "project P-0117 SUSPENDED"
    assert issue(registry, "ISS-2") == "PROJECT_SUSPENDED"
    # units already issued move as before
    moved = registry.transfer(
        REGULATOR, "T-1", OWNER, "TRD-0001", UnitSelector(UnitType.CCER), 40, "sold"
    )
    assert moved.ok
    back = {**status, "reason": "re-verified", "reference": "MEE-R-1"}
    assert decided(registry, "P-REI", "PROJECT_REINSTATEMENT", back) == (
        "project P-0117 REGISTERED"
    )
    assert issue(registry, "ISS-3") == ""
    gone = {**status, "reason": "withdrawn", "reference": "MEE-D-1"}
    assert decided(registry, "P-DER", "PROJECT_DEREGISTRATION", gone) == (
        "project P-0117 DEREGISTERED"
    )
    assert issue(registry, "ISS-4") == "PROJECT_DEREGISTERED"
    late = {**status, "reference": "MEE-S-2"}  # (MEE-S-1 again would be a replay)
    again = registry.proposals.propose(LI, "P-SUS-2", "PROJECT_SUSPENSION", late, "again")
    failed = registry.proposals.approve(WANG, "mee", again.proposal.proposal_id).proposal
    assert (failed.status, failed.failure_reason) == (
        ProposalStatus.FAILED,
        "PROJECT_DEREGISTERED",
    )
    assert registry.transfer(
        REGULATOR, "T-2", "TRD-0001", OWNER, UnitSelector(UnitType.CCER), 40, "back"
    ).ok
    # the project as the store replays it (events, not the cache)
    stored = registry.repository.get(Project.id_for("P-0117"))
    assert isinstance(stored, Project)
    assert [type(e).__name__ for e in registry.events.get(stored.id)] == [
        "Registered",
        "Suspended",
        "Reinstated",
        "Deregistered",
    ]
    assert (stored.status, stored.status_reference) == (ProjectStatus.DEREGISTERED, "MEE-D-1")
    assert_conserved(registry)


def test_registration_retries_and_refusals_change_nothing(owner: Registry) -> None:
    registry = owner
    details = ProjectDetails.from_dict(payload())
    first = registry.projects.register(REGULATOR, "P-0117", details, StatusChange("ok", "REG-1"))
    assert not first.replayed and first.position
    again = registry.projects.register(REGULATOR, "P-0117", details, StatusChange("ok", "REG-1"))
    assert again.replayed and again.position is None
    with pytest.raises(ProjectExistsWithDifferentContent):
        registry.projects.register(REGULATOR, "P-0117", details, StatusChange("ok", "REG-2"))
    open_trader(registry, "TRD-0001")
    not_project = ProjectDetails.from_dict(payload(owner_account="TRD-0001"))
    with pytest.raises(ProjectOwnerNotProjectAccount):
        registry.projects.register(REGULATOR, "P-2", not_project, StatusChange("x", "R"))
    with pytest.raises(UnknownAccount):
        registry.projects.register(
            REGULATOR,
            "P-3",
            ProjectDetails.from_dict(payload(owner_account="PRJ-NONE")),
            StatusChange("x", "R"),
        )
    with pytest.raises(UnknownProject):
        registry.projects.get("P-2")
    with pytest.raises(UnknownProject):
        registry.projects.suspend(REGULATOR, "P-2", StatusChange("x", "R"))
    assert [v.project_id for v in registry.projects.matching(ProjectQuery())] == ["P-0117"]
    # a proposal whose payload could not be carried out is refused when proposed
    bad = payload(crediting_end="2019-12-31")
    with pytest.raises(Exception) as raised:
        registry.proposals.propose(LI, "P-BAD", "PROJECT_REGISTRATION", bad, "typo")
    assert getattr(raised.value, "reason", "") == "INVALID_CREDITING_PERIOD"
    assert getattr(raised.value, "metadata", {}).get("field") == "payload.crediting_end"


def test_projects_matching_an_origin_s_attributes(registry: Registry) -> None:
    """What origin detention asks: the projects of a province, a methodology, a
    developer or a verifier, by project id."""
    register_project(registry, "P-3", "PRJ-0001", province="Gansu")
    register_project(registry, "P-1", "PRJ-0001", province="Yunnan")
    register_project(registry, "P-2", "PRJ-0002", province="gansu", methodology="CCER-01")
    projects = registry.projects

    def ids(**query: Any) -> list[str]:
        return [v.project_id for v in projects.matching(ProjectQuery(**query))]

    assert ids() == ["P-1", "P-2", "P-3"]
    assert ids(province="Gansu") == ["P-2", "P-3"]
    assert ids(methodology="CCER-01") == ["P-2"]
    assert ids(developer="PRJ-0002 Carbon Co.") == ["P-2"]
    assert ids(verifier="China Quality Certification Centre") == ["P-1", "P-2", "P-3"]
    projects.suspend(REGULATOR, "P-3", StatusChange("lapsed", "S-1"))
    assert ids(statuses=frozenset({ProjectStatus.REGISTERED})) == ["P-1", "P-2"]

"""The Project aggregate: its details, its status guards, retries, and the query origins
ask of it (no I/O)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from registry.domain.accounts import AccountType
from registry.domain.errors import (
    InvalidCommand,
    ProjectDeregistered,
    ProjectExistsWithDifferentContent,
    ProjectNotRegistered,
    ProjectNotSuspended,
    ProjectOwnerNotProjectAccount,
    ProjectSuspended,
    RegistryError,
    VintageOutsideCreditingPeriod,
)
from registry.domain.projects import (
    Project,
    ProjectDetails,
    ProjectQuery,
    ProjectStatus,
    check_issuable,
    check_owner_account,
    matching,
    parse_project_status,
)
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitType

LI = Principal("mee", "regulator-li")
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def details(**changes: Any) -> ProjectDetails:
    values: dict[str, Any] = {
        "owner_account": "PRJ-GS-0117",
        "province": "Gansu",
        "methodology": "CCER-14-001-V01",
        "sector": "WIND",
        "verifier": "China Quality Certification Centre",
        "developer": "Gansu Jiuquan Wind Farm Co.",
        "crediting_start": date(2021, 6, 1),
        "crediting_end": date(2031, 5, 31),
    }
    return ProjectDetails(**{**values, **changes})


def registered(project_id: str = "P-0117", **changes: Any) -> Project:
    return Project.register(
        project_id=project_id,
        details=details(**changes),
        reason="validated",
        reference=f"REG-{project_id}",
        principal=LI,
        at=AT,
    )


def change(reference: str, reason: str = "decision") -> dict[str, Any]:
    return {"reason": reason, "reference": reference, "principal": LI, "at": AT}


def reason_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(RegistryError) as raised:
        call(*args, **kwargs)
    return raised.value.reason


def ccer(vintage: int, project: str = "P-0117") -> UnitClass:
    return UnitClass(UnitType.CCER, vintage, project)


def test_a_registered_project_is_issuable_within_its_crediting_period() -> None:
    """Worked example: crediting 2021-06-01 .. 2031-05-31 spans the calendar years
    2021 .. 2031 (11 years touched, 10 years long), so vintages 2021 and 2031 are issuable
    (reductions of part of each year fall inside) and 2020 and 2032 are not."""
    project = registered()
    assert project.status is ProjectStatus.REGISTERED
    assert project.owner_account == "PRJ-GS-0117"
    for vintage in (2021, 2026, 2031):
        assert check_issuable(project, ccer(vintage)) is project
    for vintage in (2020, 2032):
        with pytest.raises(VintageOutsideCreditingPeriod) as raised:
            check_issuable(project, ccer(vintage))
        assert raised.value.metadata == {"project": "P-0117", "vintage": str(vintage)}


def test_an_unregistered_project_cannot_be_issued() -> None:
    with pytest.raises(ProjectNotRegistered) as raised:
        check_issuable(None, ccer(2024, "P-NONE"))
    assert raised.value.metadata["project"] == "P-NONE"


def test_suspension_stops_issuance_until_reinstated_and_retries_are_answered() -> None:
    project = registered()
    assert project.suspend(**change("MEE-2026-12", "verification lapsed"))
    assert project.status is ProjectStatus.SUSPENDED
    assert reason_of(check_issuable, project, ccer(2024)) == "PROJECT_SUSPENDED"
    # the same suspension again is a retry: no event
    version = project.version
    assert not project.suspend(**change("MEE-2026-12", "verification lapsed"))
    assert project.version == version
    # another suspension while suspended is refused, naming the one in force
    with pytest.raises(ProjectSuspended) as raised:
        project.suspend(**change("MEE-2026-13"))
    assert raised.value.metadata["reference"] == "MEE-2026-12"
    assert project.reinstate(**change("MEE-2026-19", "re-verified"))
    assert project.status is ProjectStatus.REGISTERED
    assert (project.status_reason, project.status_reference) == ("re-verified", "MEE-2026-19")
    assert check_issuable(project, ccer(2024)) is project
    assert not project.reinstate(**change("MEE-2026-19", "re-verified"))
    with pytest.raises(ProjectNotSuspended):
        project.reinstate(**change("MEE-2026-20"))
    # suspended again later under a new reference: allowed
    assert project.suspend(**change("MEE-2027-01"))


def test_deregistration_is_final() -> None:
    project = registered()
    assert project.deregister(**change("MEE-2027-02", "withdrawn by the owner"))
    assert not project.deregister(**change("MEE-2027-02", "withdrawn by the owner"))
    assert reason_of(check_issuable, project, ccer(2024)) == "PROJECT_DEREGISTERED"
    for step in (project.suspend, project.reinstate, project.deregister):
        with pytest.raises(ProjectDeregistered):
            step(**change("MEE-2027-03"))
    with pytest.raises(ProjectDeregistered):
        project.change_details(details(sector="SOLAR"), **change("MEE-2027-04"))


def test_details_change_is_recorded_once() -> None:
    project = registered()
    assert project.change_details(details(owner_account="PRJ-GS-0200"), **change("MEE-OWN-1"))
    assert project.owner_account == "PRJ-GS-0200"
    assert not project.change_details(details(owner_account="PRJ-GS-0200"), **change("MEE-OWN-2"))
    events = [type(e).__name__ for e in project.collect_events()]
    assert events == ["Registered", "DetailsChanged"]


def test_a_registration_retry_is_answered_and_other_content_refused() -> None:
    project = registered()
    project.ensure_same_registration(details(), "REG-P-0117")  # a retry: no error
    with pytest.raises(ProjectExistsWithDifferentContent):
        project.ensure_same_registration(details(sector="SOLAR"), "REG-P-0117")
    with pytest.raises(ProjectExistsWithDifferentContent):
        project.ensure_same_registration(details(), "REG-OTHER")
    # after a change of details, the original registration is still answered as a retry
    project.change_details(details(sector="SOLAR"), **change("MEE-1"))
    project.ensure_same_registration(details(), "REG-P-0117")


def test_the_owner_must_be_a_project_account() -> None:
    check_owner_account("PRJ-GS-0117", AccountType.PROJECT)
    with pytest.raises(ProjectOwnerNotProjectAccount) as raised:
        check_owner_account("TRD-SH-0001", AccountType.TRADING)
    assert raised.value.metadata == {"account": "TRD-SH-0001", "account_type": "TRADING"}


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"province": ""}, "MISSING_FIELD", "province"),
        ({"methodology": " CCER-14"}, "INVALID_PROJECT_DETAILS", "methodology"),
        ({"verifier": "x" * 201}, "INVALID_PROJECT_DETAILS", "verifier"),
        ({"developer": "a\x00b"}, "INVALID_PROJECT_DETAILS", "developer"),
        ({"owner_account": "prj 1"}, "INVALID_ACCOUNT_ID", "owner_account"),
        ({"crediting_end": date(2021, 5, 31)}, "INVALID_CREDITING_PERIOD", "crediting_end"),
        ({"crediting_start": "2021-02-30"}, "INVALID_CREDITING_PERIOD", "crediting_start"),
        ({"crediting_start": "20210601"}, "INVALID_CREDITING_PERIOD", "crediting_start"),
    ],
)
def test_bad_details_are_refused_naming_the_field(
    changes: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(InvalidCommand) as raised:
        details(**changes)
    assert (raised.value.reason, raised.value.metadata["field"]) == (reason, field)


def test_bad_ids_references_and_reasons_change_nothing() -> None:
    for project_id, reason in (("", "MISSING_PROJECT"), ("P/1", "INVALID_PROJECT")):
        assert reason_of(registered, project_id) == reason
    project = registered()
    assert reason_of(project.suspend, **change("")) == "MISSING_REFERENCE"
    assert reason_of(project.suspend, **change("R-1", reason=" ")) == "MISSING_FIELD"
    assert project.status is ProjectStatus.REGISTERED and not project.references.get("R-1")
    assert reason_of(parse_project_status, "ACTIVE") == "UNKNOWN_PROJECT_STATUS"


def test_details_round_trip_through_primitive_state() -> None:
    """What the events store (ISO dates) reads back as the same details."""
    original = details()
    assert original.as_dict()["crediting_start"] == "2021-06-01"
    assert ProjectDetails.from_dict(original.as_dict()) == original
    with pytest.raises(InvalidCommand) as raised:
        ProjectDetails.from_dict({**original.as_dict(), "sector": None})
    assert raised.value.metadata["field"] == "sector"


def test_origins_query_projects_by_their_attributes() -> None:
    wind = registered("P-1")
    solar = registered(
        "P-2",
        province="Yunnan",
        sector="SOLAR",
        methodology="CCER-01-001-V01",
        verifier="CEC",
    )
    forest = registered("P-3", province="gansu", developer="Longyuan")
    forest.suspend(**change("S-1"))
    everything = [wind, solar, forest]

    def ids(query: ProjectQuery) -> list[str]:
        return [v.project_id for v in matching(everything, query)]

    assert ids(ProjectQuery()) == ["P-1", "P-2", "P-3"]
    assert ids(ProjectQuery(province="GANSU")) == ["P-1", "P-3"]  # case-insensitive
    assert ids(ProjectQuery(methodology="CCER-01-001-V01")) == ["P-2"]
    assert ids(ProjectQuery(developer="Longyuan")) == ["P-3"]
    assert ids(ProjectQuery(verifier="CEC")) == ["P-2"]
    assert ids(ProjectQuery(sector="WIND")) == ["P-1", "P-3"]
    assert ids(ProjectQuery(province="Gansu", statuses=frozenset({ProjectStatus.SUSPENDED}))) == [
        "P-3"
    ]

"""A CCER project as a record: who owns it, where it is, how its reductions are counted
and verified, when it may earn credits, and whether it may be issued more.

Before projects were records a project was only the third part of a unit class key
(``CCER/2024/P-0001``); anything could be issued under any string. A ``Project`` is
registered by a regulator (through four eyes), may have its details changed, be
suspended and reinstated, and be deregistered for good. Issuance of CCER names a
registered, non-suspended project, and its units land in the project owner's
``PROJECT`` account (``check_issuable``). Units issued before this rule, for projects
never registered, stay valid: the rule applies to new issuance only.

The model follows the Measures for the Administration of Voluntary Greenhouse Gas
Emission Reduction Trading (Trial), MEE and SAMR 2023 (Order No. 31): a project is
registered with its owner, methodology, validation and verification bodies and
crediting period, and only reductions of a registered project, within its crediting
period, are registered as CCER (the vintage check). The article numbers are not
pinned here (see ``docs/projects.md``).

One aggregate per project (id from the project id, the same token as a unit class's
project, ``registry.domain.units.check_project``). Every change records the principal,
the reason, the reference of the decision (a registration number, a decision letter)
and the proposal that carried it, if any. A retry is answered, not repeated: the same
details again, or a status change under a reference already used for it, triggers no
event. State is primitive (dates as ISO text) so snapshots round-trip through JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.accounts import AccountType, check_account_id
from registry.domain.errors import (
    InvalidCommand,
    ProjectDeregistered,
    ProjectExistsWithDifferentContent,
    ProjectNotRegistered,
    ProjectNotSuspended,
    ProjectOwnerNotProjectAccount,
    ProjectSuspended,
    VintageOutsideCreditingPeriod,
)
from registry.domain.ids import NAMESPACE, has_control_characters
from registry.domain.reasons import check_reason
from registry.domain.restrictions import aware, check_reference, principal_name
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitType, check_project

MAX_DETAIL = 200
"""A province, methodology, sector or body's name: short printable text."""


class ProjectStatus(StrEnum):
    REGISTERED = "REGISTERED"
    """May be issued units (within its crediting period)."""
    SUSPENDED = "SUSPENDED"
    """No new issuance until reinstated; units already issued move as before."""
    DEREGISTERED = "DEREGISTERED"
    """Final: no issuance, no change, no reinstatement."""


def parse_project_status(value: str) -> ProjectStatus:
    try:
        return ProjectStatus(value)
    except ValueError:
        raise InvalidCommand(
            f"unknown project status {value!r}; expected one of {', '.join(ProjectStatus)}",
            reason="UNKNOWN_PROJECT_STATUS",
            field="status",
        ) from None


def check_project_id(project_id: str) -> str:
    """A project id: required, and the token a CCER unit class names."""
    if not isinstance(project_id, str) or not project_id:
        raise InvalidCommand("project id is required", reason="MISSING_PROJECT", field="project_id")
    try:
        return check_project(project_id)
    except InvalidCommand as error:
        raise InvalidCommand(error.message, reason=error.reason, field="project_id") from None


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCommand(f"{name} is required", reason="MISSING_FIELD", field=name)
    if len(value) > MAX_DETAIL or has_control_characters(value) or value != value.strip():
        raise InvalidCommand(
            f"{name} must be 1-{MAX_DETAIL} characters without control characters or "
            "surrounding blanks",
            reason="INVALID_PROJECT_DETAILS",
            field=name,
        )
    return value


def _date(value: object, name: str) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else _no()
    except ValueError:
        raise InvalidCommand(
            f"{name} must be an ISO date (YYYY-MM-DD), got {value!r}",
            reason="INVALID_CREDITING_PERIOD",
            field=name,
        ) from None


def _no() -> date:
    raise ValueError


@dataclass(frozen=True)
class ProjectDetails:
    """Everything a registration fixes and a change may change; validated when made.

    ``developer`` is the listed entity that developed the project (its owner's group or
    a consultant), ``verifier`` the validation and verification body; both are names as
    the registration document gives them, matched exactly by origin queries."""

    owner_account: str
    province: str
    methodology: str
    sector: str
    verifier: str
    developer: str
    crediting_start: date
    crediting_end: date

    def __post_init__(self) -> None:
        try:
            check_account_id(self.owner_account)
        except InvalidCommand as error:
            raise InvalidCommand(
                error.message, reason=error.reason, field="owner_account"
            ) from None
        for name in ("province", "methodology", "sector", "verifier", "developer"):
            _text(getattr(self, name), name)
        start = _date(self.crediting_start, "crediting_start")
        end = _date(self.crediting_end, "crediting_end")
        object.__setattr__(self, "crediting_start", start)
        object.__setattr__(self, "crediting_end", end)
        if end < start:
            raise InvalidCommand(
                f"the crediting period ends ({end}) before it starts ({start})",
                reason="INVALID_CREDITING_PERIOD",
                field="crediting_end",
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectDetails:
        """From primitive state or a payload (dates as ISO text); a missing field is named."""
        values = {}
        for f in fields(cls):
            value = data.get(f.name)
            if value is None or value == "":
                raise InvalidCommand(f"{f.name} is required", reason="MISSING_FIELD", field=f.name)
            values[f.name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, str]:
        """Primitive state: dates as ISO text."""
        data = asdict(self)
        data["crediting_start"] = self.crediting_start.isoformat()
        data["crediting_end"] = self.crediting_end.isoformat()
        return data

    def covers(self, vintage: int) -> bool:
        """Whether reductions of ``vintage`` can fall inside the crediting period."""
        return self.crediting_start.year <= vintage <= self.crediting_end.year


@dataclass(frozen=True)
class ProjectView:
    """A project as a client sees it."""

    project_id: str
    details: ProjectDetails
    status: ProjectStatus
    registered_by: str
    registered_at: datetime | None
    reference: str
    """The registration's reference (its registration number or decision)."""
    status_reason: str
    """Why the status is what it is (the last status change's reason)."""
    status_reference: str
    changed_at: datetime | None
    version: int


@dataclass(frozen=True)
class ProjectQuery:
    """Which projects an origin names: every given attribute must match exactly (a
    province case-insensitively, as grants match provinces); None matches anything.

    The write-side question origin detention asks (``Projects.matching``)."""

    province: str | None = None
    methodology: str | None = None
    sector: str | None = None
    developer: str | None = None
    verifier: str | None = None
    statuses: frozenset[ProjectStatus] | None = None

    def matches(self, details: ProjectDetails, status: ProjectStatus) -> bool:
        return (
            (self.province is None or details.province.casefold() == self.province.casefold())
            and (self.methodology is None or details.methodology == self.methodology)
            and (self.sector is None or details.sector == self.sector)
            and (self.developer is None or details.developer == self.developer)
            and (self.verifier is None or details.verifier == self.verifier)
            and (self.statuses is None or status in self.statuses)
        )


def check_owner_account(account_id: str, account_type: AccountType) -> None:
    """A project's owner account must be a PROJECT account (it receives the issuance)."""
    if account_type is not AccountType.PROJECT:
        raise ProjectOwnerNotProjectAccount(
            f"account {account_id} is a {account_type} account; a project's owner "
            "account must be a PROJECT account",
            account=account_id,
            account_type=account_type,
        )


def check_issuable(project: Project | None, unit_class: UnitClass) -> Project:
    """The project a CCER issuance of ``unit_class`` may be made for, or the refusal:
    unregistered, suspended, deregistered, or a vintage outside its crediting period."""
    assert unit_class.unit_type is UnitType.CCER
    if project is None:
        raise ProjectNotRegistered(
            f"project {unit_class.project} is not registered: register it before issuing its units",
            project=unit_class.project,
        )
    project.ensure_issuable(unit_class.vintage)
    return project


class Project(Aggregate):
    """One CCER project. Guard methods raise before any event is triggered."""

    TOPIC = "registry.Project"

    def __init__(self) -> None:
        self.project_id = ""
        self.details_state: dict[str, str] = {}
        self.registered_details: dict[str, str] = {}
        self.status_name = ProjectStatus.REGISTERED.value
        self.registered_by = ""
        self.registered_at: datetime | None = None
        self.reference = ""
        self.status_reason = ""
        self.status_reference = ""
        self.changed_at: datetime | None = None
        self.references: dict[str, str] = {}
        """Every status change's reference -> the status it set: a retry under a
        reference already used for the same change is answered, not repeated."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(project_id: str) -> UUID:
        return uuid5(NAMESPACE, f"project:{project_id}")

    @property
    def status(self) -> ProjectStatus:
        return ProjectStatus(self.status_name)

    @property
    def details(self) -> ProjectDetails:
        return ProjectDetails.from_dict(self.details_state)

    @property
    def owner_account(self) -> str:
        return self.details_state["owner_account"]

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.Project.Created"

    class Registered(Aggregate.Created):
        TOPIC = "registry.Project.Registered"
        project_id: str
        details: dict[str, str]
        principal: str
        reason: str
        reference: str
        at: datetime
        proposal: str

        def apply(self, project: Project) -> None:
            project.project_id = self.project_id
            project.details_state = dict(self.details)
            project.registered_details = dict(self.details)
            project.registered_by = self.principal
            project.registered_at = self.at
            project.reference = self.reference
            project.status_reason = self.reason
            project.status_reference = self.reference
            project.changed_at = self.at
            project.references = {self.reference: ProjectStatus.REGISTERED.value}

    class DetailsChanged(Aggregate.Event):
        TOPIC = "registry.Project.DetailsChanged"
        details: dict[str, str]
        principal: str
        reason: str
        reference: str
        at: datetime
        proposal: str

        def apply(self, project: Project) -> None:
            project.details_state = dict(self.details)
            project.changed_at = self.at

    class Suspended(Aggregate.Event):
        TOPIC = "registry.Project.Suspended"
        principal: str
        reason: str
        reference: str
        at: datetime
        proposal: str

        def apply(self, project: Project) -> None:
            project.set_status(ProjectStatus.SUSPENDED, self.reason, self.reference, self.at)

    class Reinstated(Aggregate.Event):
        TOPIC = "registry.Project.Reinstated"
        principal: str
        reason: str
        reference: str
        at: datetime
        proposal: str

        def apply(self, project: Project) -> None:
            project.set_status(ProjectStatus.REGISTERED, self.reason, self.reference, self.at)

    class Deregistered(Aggregate.Event):
        TOPIC = "registry.Project.Deregistered"
        principal: str
        reason: str
        reference: str
        at: datetime
        proposal: str

        def apply(self, project: Project) -> None:
            project.set_status(ProjectStatus.DEREGISTERED, self.reason, self.reference, self.at)

    def set_status(self, status: ProjectStatus, reason: str, reference: str, at: datetime) -> None:
        """What a status event applies (never called but by one)."""
        self.status_name = status.value
        self.status_reason = reason
        self.status_reference = reference
        self.changed_at = at
        self.references = {**self.references, reference: status.value}

    # -- creation and commands --------------------------------------------------------

    @classmethod
    def register(
        cls,
        *,
        project_id: str,
        details: ProjectDetails,
        reason: str,
        reference: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> Project:
        """A newly registered project. The application first loads an existing one and
        asks :meth:`ensure_same_registration` (a retry must not register it twice)."""
        check_project_id(project_id)
        check_reason(reason)
        check_reference(reference)
        aware(at)
        return cls._create(
            cls.Registered,
            id=cls.id_for(project_id),
            project_id=project_id,
            details=details.as_dict(),
            principal=principal_name(principal),
            reason=reason,
            reference=reference,
            at=at,
            proposal=proposal,
        )

    def ensure_same_registration(self, details: ProjectDetails, reference: str) -> None:
        """A retried registration (same details, same reference) is a replay; anything
        else under this project id is refused."""
        if reference != self.reference or details.as_dict() != self.registered_details:
            raise ProjectExistsWithDifferentContent(
                f"project {self.project_id} is registered (under {self.reference}) with "
                "other details; change them with UpdateProject",
                project=self.project_id,
                reference=self.reference,
            )

    def change_details(
        self,
        details: ProjectDetails,
        *,
        reason: str,
        reference: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Replace the details; False (no event) when they already are these."""
        check_reason(reason)
        check_reference(reference)
        aware(at)
        if details.as_dict() == self.details_state:
            return False
        self._ensure_not_deregistered()
        self.trigger_event(
            self.DetailsChanged,
            details=details.as_dict(),
            principal=principal_name(principal),
            reason=reason,
            reference=reference,
            at=at,
            proposal=proposal,
        )
        return True

    def suspend(
        self,
        *,
        reason: str,
        reference: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """REGISTERED -> SUSPENDED: no new issuance until reinstated. False for a retry
        (this reference already suspended it)."""
        if self._replayed(ProjectStatus.SUSPENDED, reason, reference, at):
            return False
        self._ensure_not_deregistered()
        if self.status is ProjectStatus.SUSPENDED:
            raise ProjectSuspended(
                f"project {self.project_id} is already suspended (under {self.status_reference})",
                project=self.project_id,
                reference=self.status_reference,
            )
        self._trigger(self.Suspended, reason, reference, principal, at, proposal)
        return True

    def reinstate(
        self,
        *,
        reason: str,
        reference: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """SUSPENDED -> REGISTERED. False for a retry."""
        if self._replayed(ProjectStatus.REGISTERED, reason, reference, at):
            return False
        self._ensure_not_deregistered()
        if self.status is not ProjectStatus.SUSPENDED:
            raise ProjectNotSuspended(
                f"project {self.project_id} is {self.status}, not suspended",
                project=self.project_id,
                status=self.status,
            )
        self._trigger(self.Reinstated, reason, reference, principal, at, proposal)
        return True

    def deregister(
        self,
        *,
        reason: str,
        reference: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """REGISTERED or SUSPENDED -> DEREGISTERED, for good. False for a retry."""
        if self._replayed(ProjectStatus.DEREGISTERED, reason, reference, at):
            return False
        self._ensure_not_deregistered()
        self._trigger(self.Deregistered, reason, reference, principal, at, proposal)
        return True

    def _trigger(
        self,
        event: type[Project.Suspended | Project.Reinstated | Project.Deregistered],
        reason: str,
        reference: str,
        principal: Principal | str,
        at: datetime,
        proposal: str,
    ) -> None:
        self.trigger_event(
            event,
            principal=principal_name(principal),
            reason=reason,
            reference=reference,
            at=at,
            proposal=proposal,
        )

    # -- guards -----------------------------------------------------------------------

    def ensure_issuable(self, vintage: int) -> None:
        """Refuse new issuance unless registered (not suspended or deregistered) and
        ``vintage`` falls within the crediting period."""
        if self.status is ProjectStatus.SUSPENDED:
            raise ProjectSuspended(
                f"project {self.project_id} is suspended (under {self.status_reference}): "
                "no issuance until it is reinstated",
                project=self.project_id,
                reference=self.status_reference,
            )
        self._ensure_not_deregistered()
        details = self.details
        if not details.covers(vintage):
            raise VintageOutsideCreditingPeriod(
                f"vintage {vintage} is outside project {self.project_id}'s crediting period "
                f"{details.crediting_start}..{details.crediting_end}",
                project=self.project_id,
                vintage=vintage,
            )

    def _ensure_not_deregistered(self) -> None:
        if self.status is ProjectStatus.DEREGISTERED:
            raise ProjectDeregistered(
                f"project {self.project_id} is deregistered (under {self.status_reference})",
                project=self.project_id,
                reference=self.status_reference,
            )

    def _replayed(self, status: ProjectStatus, reason: str, reference: str, at: datetime) -> bool:
        """Validate a status change; True if ``reference`` already set ``status`` on
        this project (a retry)."""
        check_reason(reason)
        check_reference(reference)
        aware(at)
        return self.references.get(reference) == status.value

    # -- reading ------------------------------------------------------------------

    def view(self) -> ProjectView:
        return ProjectView(
            project_id=self.project_id,
            details=self.details,
            status=self.status,
            registered_by=self.registered_by,
            registered_at=self.registered_at,
            reference=self.reference,
            status_reason=self.status_reason,
            status_reference=self.status_reference,
            changed_at=self.changed_at,
            version=self.version,
        )


def matching(projects: Iterable[Project], query: ProjectQuery) -> list[ProjectView]:
    """The projects ``query`` matches, by project id."""
    views = [p.view() for p in projects]
    return sorted(
        (v for v in views if query.matches(v.details, v.status)), key=lambda v: v.project_id
    )

"""CCER projects: registering them, changing their details, suspending, reinstating and
deregistering them (each through an approved proposal when four eyes are required, see
``four_eyes``), and reading them back.

Reads come from the write side (the event store's list of registered projects, loaded
at once): projects number in the thousands, not millions, and a regulator who has just
registered one reads it back at once. ``matching`` is the question an origin (a
province, a methodology, a developer, a verifier) asks of the projects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from registry.application.restrictions import cover_registered_project
from registry.application.store import Store
from registry.application.unit_of_work import UnitOfWork
from registry.application.unit_of_work import saved_position as _position
from registry.domain.errors import UnknownProject
from registry.domain.projects import (
    Project,
    ProjectDetails,
    ProjectQuery,
    ProjectView,
    check_owner_account,
    check_project_id,
    matching,
)
from registry.domain.transactions import Principal


@dataclass(frozen=True)
class ProjectResult:
    project: ProjectView
    replayed: bool = False
    position: int | None = None


@dataclass(frozen=True)
class StatusChange:
    """Why and on what decision a project's status changes."""

    reason: str
    reference: str
    proposal: str = ""


class Projects:
    """The project use cases of one registry."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def register(
        self,
        principal: Principal,
        project_id: str,
        details: ProjectDetails,
        change: StatusChange,
    ) -> ProjectResult:
        """Register a project owned by a PROJECT account; the same registration again
        is a replay, other details under the same id are refused. A predicate origin
        detained now that it matches is re-resolved to cover it, in the same save."""
        check_project_id(project_id)
        store = self._store

        def attempt(uow: UnitOfWork) -> ProjectResult:
            existing = uow.find(Project.id_for(project_id), Project)
            if existing is not None:
                existing.ensure_same_registration(details, change.reference)
                return ProjectResult(existing.view(), replayed=True)
            owner = uow.account(details.owner_account)
            check_owner_account(owner.account_id, owner.account_type)
            now = store.clock()
            project = uow.add(
                Project.register(
                    project_id=project_id,
                    details=details,
                    reason=change.reason,
                    reference=change.reference,
                    principal=principal,
                    at=now,
                    proposal=change.proposal,
                )
            )
            # a detention of a province, entity or methodology it matches covers it
            # from the start: recorded on the detention in this same save
            cover_registered_project(uow, principal, project, change.reference, now)
            return ProjectResult(project.view(), position=_position(uow.save()))

        return store.retrying(attempt)

    def change_details(
        self,
        principal: Principal,
        project_id: str,
        details: ProjectDetails,
        change: StatusChange,
    ) -> ProjectResult:
        """Replace a project's details (a new owner must be a PROJECT account too)."""
        store = self._store

        def attempt(uow: UnitOfWork) -> ProjectResult:
            project = _project(uow, project_id)
            if details.owner_account != project.owner_account:
                owner = uow.account(details.owner_account)
                check_owner_account(owner.account_id, owner.account_type)
            changed = project.change_details(
                details,
                reason=change.reason,
                reference=change.reference,
                principal=principal,
                at=store.clock(),
                proposal=change.proposal,
            )
            return _result(uow, project, changed)

        return store.retrying(attempt)

    def suspend(self, principal: Principal, project_id: str, change: StatusChange) -> ProjectResult:
        return self._status(principal, project_id, change, Project.suspend)

    def reinstate(
        self, principal: Principal, project_id: str, change: StatusChange
    ) -> ProjectResult:
        return self._status(principal, project_id, change, Project.reinstate)

    def deregister(
        self, principal: Principal, project_id: str, change: StatusChange
    ) -> ProjectResult:
        return self._status(principal, project_id, change, Project.deregister)

    def _status(
        self, principal: Principal, project_id: str, change: StatusChange, step: Callable[..., bool]
    ) -> ProjectResult:
        store = self._store

        def attempt(uow: UnitOfWork) -> ProjectResult:
            project = _project(uow, project_id)
            changed = step(
                project,
                reason=change.reason,
                reference=change.reference,
                principal=principal,
                at=store.clock(),
                proposal=change.proposal,
            )
            return _result(uow, project, changed)

        return store.retrying(attempt)

    # -- reading ----------------------------------------------------------------------

    def get(self, project_id: str) -> ProjectView:
        check_project_id(project_id)
        return _project(UnitOfWork(self._store.app), project_id).view()

    def matching(self, query: ProjectQuery) -> list[ProjectView]:
        """Every project ``query`` matches, by project id: ``ListProjects``, and the
        projects an origin (province, methodology, developer, verifier) names."""
        return matching(self._all(), query)

    def _all(self) -> list[Project]:
        store = self._store
        uow = UnitOfWork(store.app)
        ids = list(store.originators(Project.Registered.TOPIC))
        uow.prefetch(ids, store.load_many)
        return [p for p in (uow.find(i, Project) for i in ids) if p is not None]


def _project(uow: UnitOfWork, project_id: str) -> Project:
    project = uow.find(Project.id_for(project_id), Project)
    if project is None:
        raise UnknownProject(f"no project {project_id}", project=project_id)
    return project


def _result(uow: UnitOfWork, project: Project, changed: bool) -> ProjectResult:
    position = _position(uow.save()) if changed else None
    return ProjectResult(project.view(), replayed=not changed, position=position)

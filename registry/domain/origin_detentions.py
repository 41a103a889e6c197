"""An origin detention: every unit of one CCER project is detained wherever it is (any
account, any kind, issuance of more units included) until a regulator clears it on
evidence.

One aggregate per project (id from the project id); it can be detained, cleared and
detained again. A second ``detain`` while detained is a *replay* (no event) when it
carries a reference already used for this project, and refused
(``ORIGIN_ALREADY_DETAINED``, naming the active detention) otherwise. What the three
restrictions share, and the guards, are in ``registry.domain.restrictions``.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import DetentionNotActive, InvalidCommand, OriginAlreadyDetained
from registry.domain.ids import NAMESPACE
from registry.domain.reasons import check_reason
from registry.domain.restrictions import (
    RestrictionHistory,
    aware,
    change_entry,
    check_evidence,
    check_reference,
    principal_name,
)
from registry.domain.transactions import Principal
from registry.domain.units import UnitType, parse_unit_type

MAX_PROJECT = 128

PROJECT_ID = re.compile(r"[^\s/]+")
"""A project id is one token: ``/`` separates the parts of a unit class key."""


def check_origin(project: str, unit_type: UnitType | str = UnitType.CCER) -> str:
    """The origin a detention names: a CCER project id. Allowances have no origin project,
    so a CEA "origin" is refused rather than silently detaining nothing."""
    kind = unit_type if isinstance(unit_type, UnitType) else parse_unit_type(unit_type)
    if kind is not UnitType.CCER:
        raise InvalidCommand(
            f"only CCER units have an origin project, not {kind}",
            reason="NOT_CCER_ORIGIN",
            unit_type=kind,
        )
    if not isinstance(project, str) or not project:
        raise InvalidCommand(
            "the origin project id is required", reason="MISSING_ORIGIN", field="project"
        )
    if len(project) > MAX_PROJECT or not project.isprintable() or not PROJECT_ID.fullmatch(project):
        raise InvalidCommand(
            f"origin {project!r} must be a project id (1-{MAX_PROJECT} characters, no "
            "spaces or '/'), not a unit class",
            reason="INVALID_ORIGIN",
            field="project",
        )
    return project


class DetentionStatus(StrEnum):
    NOT_DETAINED = "NOT_DETAINED"
    """Started, never detained (the creation event precedes the first detention)."""
    DETAINED = "DETAINED"
    CLEARED = "CLEARED"


class OriginDetention(RestrictionHistory, Aggregate):
    """Every unit of one CCER project, detained wherever it is until cleared on evidence."""

    TOPIC = "registry.OriginDetention"

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.project = ""
        self.status_name = DetentionStatus.NOT_DETAINED.value
        self.reference = ""
        self.reason = ""
        self.detained_by = ""
        self.detained_at: datetime | None = None
        self.cleared_by = ""
        self.cleared_at: datetime | None = None
        self.clearance_reason = ""
        self.evidence = ""
        self.references: list[str] = []
        """Every detention reference used for this project: a retry of any of them is
        answered, not repeated (even after the detention it made was cleared)."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(project: str) -> UUID:
        return uuid5(NAMESPACE, f"origin-detention:{project}")

    @property
    def status(self) -> DetentionStatus:
        return DetentionStatus(self.status_name)

    @property
    def is_active(self) -> bool:
        return self.status_name == DetentionStatus.DETAINED.value

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.OriginDetention.Created"

    class Started(Aggregate.Created):
        TOPIC = "registry.OriginDetention.Started"
        project: str

        def apply(self, detention: OriginDetention) -> None:
            detention.project = self.project

    class Detained(Aggregate.Event):
        TOPIC = "registry.OriginDetention.Detained"
        reference: str
        reason: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, detention: OriginDetention) -> None:
            detention.status_name = DetentionStatus.DETAINED.value
            detention.reference = self.reference
            detention.reason = self.reason
            detention.detained_by = self.principal
            detention.detained_at = self.at
            detention.references = [*detention.references, self.reference]
            detention._log(
                change_entry(
                    "DETAINED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=self.reference,
                    proposal=self.proposal,
                )
            )

    class Cleared(Aggregate.Event):
        TOPIC = "registry.OriginDetention.Cleared"
        reason: str
        evidence: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, detention: OriginDetention) -> None:
            detention.status_name = DetentionStatus.CLEARED.value
            detention.cleared_by = self.principal
            detention.cleared_at = self.at
            detention.clearance_reason = self.reason
            detention.evidence = self.evidence
            detention._log(
                change_entry(
                    "CLEARED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=detention.reference,
                    evidence=self.evidence,
                    proposal=self.proposal,
                )
            )

    # -- creation and commands -----------------------------------------------------

    @classmethod
    def start(cls, project: str, unit_type: UnitType | str = UnitType.CCER) -> OriginDetention:
        """The (not yet detaining) record of a project; the application starts it on the
        project's first detention and calls :meth:`detain` on it in the same save."""
        check_origin(project, unit_type)
        return cls._create(cls.Started, id=cls.id_for(project), project=project)

    def detain(
        self,
        *,
        reference: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Detain the project's units; True if this call did, False for a retry (a
        reference already used for this project). Detained under another reference:
        refused, naming the active detention."""
        check_reference(reference)
        check_reason(reason)
        aware(at)
        if reference in self.references:
            return False
        if self.is_active:
            raise OriginAlreadyDetained(
                f"project {self.project} is already detained under {self.reference}",
                project=self.project,
                detention=self.reference,
            )
        self.trigger_event(
            self.Detained,
            reference=reference,
            reason=reason,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
        )
        return True

    def clear(
        self,
        *,
        evidence: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Release the project's units on evidence; True if this call did, False for a
        retry (the clearance already recorded this evidence)."""
        check_evidence(evidence)
        check_reason(reason)
        aware(at)
        if not self.is_active:
            if self.status is DetentionStatus.CLEARED and evidence == self.evidence:
                return False
            raise DetentionNotActive(
                f"project {self.project} is not detained",
                project=self.project,
                status=self.status_name,
            )
        self.trigger_event(
            self.Cleared,
            reason=reason,
            evidence=evidence,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
        )
        return True

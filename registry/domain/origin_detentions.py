"""An origin detention: every unit of a flagged origin is detained wherever it is (any
account, any kind, issuance of more units included) until cleared or confirmed.

Modelled on a rebuttable presumption (docs/origins.md): units of the origin are presumed
tainted; each holder is notified with a deadline, may rebut with evidence (a statement
and the SHA-256 digests of its documents), and a second regulator clears that holder's
units or confirms the detention, which forfeits what is still detained everywhere.

An origin is a predicate over projects and units (``Origin``): a CCER project, one unit
class of it, or a predicate over project records (a province, a listed entity: developer
or verifier, a methodology). A predicate is resolved to the projects it matches when the
detention is imposed (``ProjectsResolved``, recorded) and re-resolved when a matching
project is registered later (``ProjectMatched``, in the registration's save). One
aggregate per origin (a project's id is the one detentions always had, so stores
written before origins keep their history); it can be detained, cleared and detained
again. A second ``detain`` while detained is a *replay* (no event) when it carries a
reference already used for this origin, and refused (``ORIGIN_ALREADY_DETAINED``,
naming the active detention) otherwise. What the three restrictions share, and the
guards, are in ``registry.domain.restrictions``.

Worked example (``tests/unit/test_origin_lifecycle.py``): project P-1 is detained on
1 March with a 30-day rebuttal period; A holds 100 units, B 40. Both are notified with
the deadline 31 March. A rebuts on 10 March (under review) and is cleared on 20 March:
its 100 units move again. B says nothing; on 1 April (the deadline passed) the
detention is confirmed: B's 40 units are forfeited; a rebuttal from B then is refused
``REBUTTAL_DEADLINE_PASSED``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import (
    DetentionNotActive,
    HolderNotNotified,
    InvalidCommand,
    OriginAlreadyDetained,
    RebuttalAlreadySubmitted,
    RebuttalDeadlinePassed,
    RebuttalNotSubmitted,
    RebuttalPeriodOpen,
)
from registry.domain.ids import NAMESPACE, check_client_id
from registry.domain.projects import ProjectDetails, ProjectQuery, ProjectStatus
from registry.domain.reasons import check_reason
from registry.domain.restrictions import (
    BlockRow,
    RestrictionHistory,
    aware,
    block_row,
    change_entry,
    check_evidence,
    check_reference,
    principal_name,
    row_block,
)
from registry.domain.transactions import Principal
from registry.domain.units import SerialBlock, UnitClass, UnitType, parse_unit_type

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


DEFAULT_REBUTTAL_DAYS = 30
"""Days a notified holder has to rebut, unless the detention's proposal says otherwise.
Modelled on the 30 days after which US Customs must decide on detained goods or they
are treated as excluded (19 U.S.C. 1499(c)(5)); no Chinese rule fixes a period for
offsets, so it is a parameter (``rebuttal_days`` of ``ORIGIN_DETENTION``, 1..365)."""
MAX_REBUTTAL_DAYS = 365
MAX_STATEMENT = 4000
"""A rebuttal's statement: a summary of the evidence, which itself stays outside the
registry (only its digests are recorded)."""
MAX_EVIDENCE = 50
SHA256_HEX = 64


class OriginKind(StrEnum):
    """What an origin names. PROVINCE, DEVELOPER, VERIFIER (the listed entities) and
    METHODOLOGY are predicates over project records, resolved to the projects they
    match when imposed and re-resolved when a matching project is registered later."""

    PROJECT = "PROJECT"
    UNIT_CLASS = "UNIT_CLASS"
    PROVINCE = "PROVINCE"
    DEVELOPER = "DEVELOPER"
    VERIFIER = "VERIFIER"
    METHODOLOGY = "METHODOLOGY"

    @property
    def is_predicate(self) -> bool:
        """Whether it names projects by their records (not a project by its id)."""
        return self not in (OriginKind.PROJECT, OriginKind.UNIT_CLASS)


MAX_ORIGIN_VALUE = 200
"""A province, entity or methodology as a project record spells it (``MAX_DETAIL``)."""


def _check_predicate_value(kind: OriginKind, value: str) -> str:
    """The name a predicate origin matches: as a project record spells it (required, at
    most ``MAX_ORIGIN_VALUE`` characters, no control characters or surrounding blanks)."""
    if not value:
        raise InvalidCommand(
            f"a {kind.value} origin names the {kind.value.lower()} ({kind.value}:<name>)",
            reason="MISSING_ORIGIN",
        )
    if len(value) > MAX_ORIGIN_VALUE or not value.isprintable() or value != value.strip():
        raise InvalidCommand(
            f"origin {kind.value}:{value!r}: the {kind.value.lower()} must be "
            f"1-{MAX_ORIGIN_VALUE} printable characters without surrounding blanks",
            reason="INVALID_ORIGIN",
        )
    return value


@dataclass(frozen=True)
class Origin:
    """A predicate over units: every unit of a project, or of one CCER unit class.

    ``key`` (``PROJECT:P-1``, ``UNIT_CLASS:CCER/2024/P-1``) names it in payloads, events
    and listings; a bare project id is read as ``PROJECT``."""

    kind: OriginKind
    value: str

    @classmethod
    def parse(cls, text: str, field: str = "origin") -> Origin:
        """The origin ``text`` names; an error names ``field`` (the request's)."""
        try:
            return cls._parse(text)
        except InvalidCommand as error:
            error.metadata["field"] = field
            raise

    @classmethod
    def _parse(cls, text: str) -> Origin:
        if not isinstance(text, str) or not text:
            raise InvalidCommand("the origin is required", reason="MISSING_ORIGIN")
        kind, sep, value = text.partition(":")
        if not sep:
            return cls(OriginKind.PROJECT, check_origin(text))
        if kind == OriginKind.PROJECT.value:
            return cls(OriginKind.PROJECT, check_origin(value))
        if kind == OriginKind.UNIT_CLASS.value:
            try:
                unit_class = UnitClass.from_key(value)
            except (InvalidCommand, ValueError, TypeError):
                unit_class = None
            if unit_class is None or unit_class.unit_type is not UnitType.CCER:
                raise InvalidCommand(
                    f"origin {text!r}: a unit class origin is a CCER class "
                    "(UNIT_CLASS:CCER/<vintage>/<project>)",
                    reason="INVALID_ORIGIN",
                )
            check_origin(unit_class.project)
            return cls(OriginKind.UNIT_CLASS, unit_class.key)
        if kind in OriginKind.__members__:
            return cls(OriginKind(kind), _check_predicate_value(OriginKind(kind), value))
        raise InvalidCommand(
            f"origin {text!r}: the kinds are " + ", ".join(k.value for k in OriginKind),
            reason="INVALID_ORIGIN_KIND",
        )

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.value}"

    @property
    def project(self) -> str:
        """The one project this origin's units come from ("" for a predicate over
        project records, which may match many)."""
        if self.kind is OriginKind.UNIT_CLASS:
            return UnitClass.from_key(self.value).project
        if self.kind.is_predicate:
            return ""
        return self.value

    @property
    def projects(self) -> tuple[str, ...]:
        """The projects a project or unit class origin names (one). A predicate's are
        resolved against the project records: ``OriginDetention.projects``."""
        return () if self.kind.is_predicate else (self.project,)

    def query(self) -> ProjectQuery:
        """The project records a predicate origin matches, whatever their status (units
        of a suspended or deregistered project still exist). A province matches
        case-insensitively, the others exactly, as ``ProjectQuery`` does (worked example:
        ``tests/unit/test_origin_predicates.py``)."""
        value = self.value
        if self.kind is OriginKind.PROVINCE:
            return ProjectQuery(province=value)
        if self.kind is OriginKind.DEVELOPER:
            return ProjectQuery(developer=value)
        if self.kind is OriginKind.VERIFIER:
            return ProjectQuery(verifier=value)
        if self.kind is OriginKind.METHODOLOGY:
            return ProjectQuery(methodology=value)
        raise InvalidCommand(
            f"origin {self} names a project, not project records", reason="INVALID_ORIGIN"
        )

    def matches_project(self, project_id: str, details: ProjectDetails) -> bool:
        """Whether the project ``project_id`` with ``details`` falls under this origin."""
        if self.kind.is_predicate:
            return self.query().matches(details, ProjectStatus.REGISTERED)
        return project_id == self.project

    def matches(self, unit_class: UnitClass, projects: Iterable[str] | None = None) -> bool:
        """Whether units of ``unit_class`` fall under this origin; a predicate's by the
        ``projects`` it was resolved to (none if not given)."""
        if self.kind is OriginKind.UNIT_CLASS:
            return unit_class.key == self.value
        if self.kind.is_predicate:
            return bool(unit_class.project) and unit_class.project in set(projects or ())
        return unit_class.project == self.value

    def __str__(self) -> str:
        return self.key


class DetentionStatus(StrEnum):
    NOT_DETAINED = "NOT_DETAINED"
    """Started, never detained (the creation event precedes the first detention)."""
    DETAINED = "DETAINED"
    CLEARED = "CLEARED"
    CONFIRMED = "CONFIRMED"
    """Confirmed: what was still detained was forfeited; nothing of it is detained now."""


class HolderStatus(StrEnum):
    """One notified holder's part in a detention."""

    NOTIFIED = "NOTIFIED"
    """Notified with a deadline; may rebut until then."""
    UNDER_REVIEW = "UNDER_REVIEW"
    """Submitted a rebuttal; awaits a regulator's clearance or the confirmation."""
    CLEARED = "CLEARED"
    """Its units were cleared on its rebuttal: they move again."""
    FORFEITED = "FORFEITED"
    """The detention was confirmed: its detained units were cancelled."""


def check_rebuttal_days(days: int | None) -> int:
    """The rebuttal period in days: 1..365, ``DEFAULT_REBUTTAL_DAYS`` when not given."""
    if days is None:
        return DEFAULT_REBUTTAL_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_REBUTTAL_DAYS:
        raise InvalidCommand(
            f"the rebuttal period must be 1..{MAX_REBUTTAL_DAYS} days, got {days!r}",
            reason="INVALID_REBUTTAL_DAYS",
            field="rebuttal_days",
        )
    return days


def check_statement(statement: str) -> str:
    """A rebuttal's statement: required, at most ``MAX_STATEMENT`` characters, printable
    (line breaks and tabs allowed)."""
    if not isinstance(statement, str) or not statement.strip():
        raise InvalidCommand(
            "a rebuttal states its case", reason="MISSING_FIELD", field="statement"
        )
    if (
        len(statement) > MAX_STATEMENT
        or not statement.replace("\n", "").replace("\t", "").replace("\r", "").isprintable()
    ):
        raise InvalidCommand(
            f"the statement must be at most {MAX_STATEMENT} printable characters",
            reason="INVALID_STATEMENT",
            field="statement",
        )
    return statement


def check_evidence_digests(digests: Iterable[str]) -> list[str]:
    """The evidence documents, by their SHA-256 digests (64 lowercase hex digits): at
    least one, at most ``MAX_EVIDENCE``, none twice. The documents stay with the holder
    (or the regulator's case file); the digests prove later which ones were submitted."""
    found = list(digests)
    if not found:
        raise InvalidCommand(
            "a rebuttal names at least one evidence document by its SHA-256 digest",
            reason="MISSING_EVIDENCE",
            field="evidence_sha256",
        )
    if len(found) > MAX_EVIDENCE:
        raise InvalidCommand(
            f"at most {MAX_EVIDENCE} evidence documents per rebuttal",
            reason="INVALID_EVIDENCE_DIGEST",
            field="evidence_sha256",
        )
    for index, digest in enumerate(found):
        if (
            not isinstance(digest, str)
            or len(digest) != SHA256_HEX
            or any(c not in _HEX for c in digest)
        ):
            raise InvalidCommand(
                f"evidence_sha256[{index}] is not a SHA-256 digest (64 lowercase hex digits)",
                reason="INVALID_EVIDENCE_DIGEST",
                field=f"evidence_sha256[{index}]",
            )
    if len(set(found)) != len(found):
        raise InvalidCommand(
            "the same evidence document is named twice",
            reason="INVALID_EVIDENCE_DIGEST",
            field="evidence_sha256",
        )
    return found


_HEX = frozenset(string.digits + "abcdef")


@dataclass(frozen=True)
class DetainedHolder:
    """A notified holder as a regulator or the holder reads it."""

    account_id: str
    status: HolderStatus
    quantity: int
    """Units of the origin it held when notified."""
    deadline: datetime
    rebuttal_id: str = ""
    statement: str = ""
    evidence: tuple[str, ...] = ()
    submitted_at: datetime | None = None
    decided_at: datetime | None = None


class OriginDetention(RestrictionHistory, Aggregate):
    """Every unit of one origin, detained wherever it is until cleared or confirmed."""

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
        self.origin_key = ""
        """The origin's key; empty in no stored event (``Started`` v1 is upcast)."""
        self.holders: dict[str, dict[str, Any]] = {}
        """Account id -> its notification, rebuttal and decision, of this detention."""
        self.released: list[BlockRow] = []
        """Serials cleared on holders' rebuttals: they move again."""
        self.confirmed_by = ""
        self.confirmed_at: datetime | None = None
        self.forfeited: dict[str, int] = {}
        """What the confirmation forfeited, per account."""
        self.invalidated: list[list[Any]] = []
        """What it invalidated: ``[company, year, tonnes]``."""
        self.resolved: list[str] = []
        """The projects a predicate origin matched (this detention's): resolved when
        imposed, grown when a matching project is registered later."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(project: str) -> UUID:
        """A project's detention: the id it had before origins had kinds."""
        return uuid5(NAMESPACE, f"origin-detention:{project}")

    @staticmethod
    def id_for_origin(origin: Origin) -> UUID:
        if origin.kind is OriginKind.PROJECT:
            return OriginDetention.id_for(origin.value)
        return uuid5(NAMESPACE, f"origin-detention:{origin.key}")

    @property
    def origin(self) -> Origin:
        return Origin.parse(self.origin_key or f"{OriginKind.PROJECT.value}:{self.project}")

    @property
    def is_confirmed(self) -> bool:
        return self.status_name == DetentionStatus.CONFIRMED.value

    @property
    def projects(self) -> tuple[str, ...]:
        """The projects whose units this detention covers: the origin's one project, or
        those a predicate origin was resolved to."""
        if self.origin.kind.is_predicate:
            return tuple(self.resolved)
        return self.origin.projects

    def matches(self, unit_class: UnitClass) -> bool:
        """Whether units of ``unit_class`` are of this detention's origin."""
        return self.origin.matches(unit_class, self.resolved)

    def detains(self, unit_class: UnitClass) -> bool:
        """Whether units of ``unit_class`` fall under this detention while it is active
        (a holder's cleared serials excepted: ``detained_parts``)."""
        return self.is_active and self.matches(unit_class)

    def detained_parts(self, block: SerialBlock) -> list[SerialBlock]:
        """The parts of ``block`` this detention holds: none unless active and of its
        origin; the serials cleared on a holder's rebuttal cut out."""
        if not self.detains(block.unit_class):
            return []
        parts = [block]
        for row in self.released:
            cut = row_block(row)
            if cut.unit_class != block.unit_class:
                continue
            kept: list[SerialBlock] = []
            for part in parts:
                if not part.overlaps(cut):
                    kept.append(part)
                    continue
                if part.first < cut.first:
                    kept.append(SerialBlock(part.unit_class, part.first, cut.first - 1))
                if cut.last < part.last:
                    kept.append(SerialBlock(part.unit_class, cut.last + 1, part.last))
            parts = kept
        return parts

    def holder(self, account_id: str) -> DetainedHolder | None:
        entry = self.holders.get(account_id)
        if entry is None:
            return None
        return DetainedHolder(
            account_id=account_id,
            status=HolderStatus(entry["status"]),
            quantity=entry["quantity"],
            deadline=entry["deadline"],
            rebuttal_id=entry.get("rebuttal_id", ""),
            statement=entry.get("statement", ""),
            evidence=tuple(entry.get("evidence", ())),
            submitted_at=entry.get("submitted_at"),
            decided_at=entry.get("decided_at"),
        )

    @property
    def notified(self) -> tuple[DetainedHolder, ...]:
        """Every notified holder, by account id."""
        return tuple(h for a in sorted(self.holders) if (h := self.holder(a)) is not None)

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
        """v2 names the origin (``PROJECT:P-1``, ``UNIT_CLASS:CCER/2024/P-1``)."""

        TOPIC = "registry.OriginDetention.Started"
        class_version = 2
        project: str
        origin: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """A detention started before origins had kinds: a project's."""
            state["origin"] = f"{OriginKind.PROJECT.value}:{state['project']}"

        def apply(self, detention: OriginDetention) -> None:
            detention.project = self.project
            detention.origin_key = self.origin

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
            detention.holders = {}  # a new case: its own notifications and rebuttals
            detention.released = []
            detention.resolved = []  # a predicate is resolved again (ProjectsResolved)
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

    class ProjectsResolved(Aggregate.Event):
        """A predicate origin (province, developer, verifier, methodology) resolved,
        when imposed, to the registered projects it matched then: their units are
        detained as a project origin's are."""

        TOPIC = "registry.OriginDetention.ProjectsResolved"
        projects: list[str]
        at: datetime

        def apply(self, detention: OriginDetention) -> None:
            detention.resolved = sorted(self.projects)
            detention._log(
                change_entry(
                    "PROJECTS_RESOLVED",
                    self.at,
                    "",
                    f"{detention.origin} matched {len(self.projects)} projects: "
                    + (", ".join(sorted(self.projects)) or "none"),
                    reference=detention.reference,
                )
            )

    class ProjectMatched(Aggregate.Event):
        """A project registered while the detention is in force matches its predicate:
        added in the registration's save, so it is detained from the start (its
        issuance is refused ``ORIGIN_DETAINED``)."""

        TOPIC = "registry.OriginDetention.ProjectMatched"
        project: str
        why: str
        """What matched: ``registered under <reference>: <field> <value>``."""
        principal: str
        at: datetime

        def apply(self, detention: OriginDetention) -> None:
            detention.resolved = sorted({*detention.resolved, self.project})
            detention._log(
                change_entry(
                    "PROJECT_MATCHED",
                    self.at,
                    self.principal,
                    f"{self.project}: {self.why}",
                    reference=detention.reference,
                )
            )

    class HolderNotified(Aggregate.Event):
        """An account held units of the origin when it was detained: told so, with the
        deadline for a rebuttal."""

        TOPIC = "registry.OriginDetention.HolderNotified"
        account_id: str
        quantity: int
        deadline: datetime
        at: datetime

        def apply(self, detention: OriginDetention) -> None:
            detention.holders = {
                **detention.holders,
                self.account_id: {
                    "status": HolderStatus.NOTIFIED.value,
                    "quantity": self.quantity,
                    "deadline": self.deadline,
                },
            }

    class RebuttalSubmitted(Aggregate.Event):
        """A holder's rebuttal: a statement and the SHA-256 digests of its evidence
        documents (references, not the files). Its units stay detained under review."""

        TOPIC = "registry.OriginDetention.RebuttalSubmitted"
        account_id: str
        rebuttal_id: str
        statement: str
        evidence: list[str]
        principal: str
        at: datetime

        def apply(self, detention: OriginDetention) -> None:
            entry = {
                **detention.holders[self.account_id],
                "status": HolderStatus.UNDER_REVIEW.value,
                "rebuttal_id": self.rebuttal_id,
                "statement": self.statement,
                "evidence": list(self.evidence),
                "submitted_at": self.at,
            }
            detention.holders = {**detention.holders, self.account_id: entry}
            detention._log(
                change_entry(
                    "REBUTTAL_SUBMITTED",
                    self.at,
                    self.principal,
                    f"rebuttal {self.rebuttal_id} for {self.account_id}",
                    reference=detention.reference,
                )
            )

    class HolderCleared(Aggregate.Event):
        """A holder's units cleared on its rebuttal (approved by a second regulator):
        the serials it held of the origin move again, wherever they go next."""

        TOPIC = "registry.OriginDetention.HolderCleared"
        account_id: str
        blocks: list[BlockRow]
        reason: str
        evidence: str
        principal: str
        at: datetime
        proposal: str

        def apply(self, detention: OriginDetention) -> None:
            entry = {
                **detention.holders[self.account_id],
                "status": HolderStatus.CLEARED.value,
                "decided_at": self.at,
            }
            detention.holders = {**detention.holders, self.account_id: entry}
            detention.released = [*detention.released, *(list(r) for r in self.blocks)]
            detention._log(
                change_entry(
                    "HOLDER_CLEARED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=detention.reference,
                    evidence=self.evidence,
                    proposal=self.proposal,
                )
            )

    class Confirmed(Aggregate.Event):
        """The presumption stands: what is still detained is forfeited (the application
        cancels it in the same save); every holder not cleared is FORFEITED."""

        TOPIC = "registry.OriginDetention.Confirmed"
        reason: str
        principal: str
        at: datetime
        proposal: str
        forfeited: dict[str, int]
        """Units forfeited per account (the FORFEITURE transactions of the same save)."""
        invalidated: list[list[Any]]
        """``[company, year, tonnes]`` of surrendered units invalidated."""

        def apply(self, detention: OriginDetention) -> None:
            detention.status_name = DetentionStatus.CONFIRMED.value
            detention.confirmed_by = self.principal
            detention.confirmed_at = self.at
            detention.forfeited = dict(self.forfeited)
            detention.invalidated = [list(row) for row in self.invalidated]
            detention.holders = {
                account: (
                    entry
                    if entry["status"] == HolderStatus.CLEARED.value
                    else {**entry, "status": HolderStatus.FORFEITED.value, "decided_at": self.at}
                )
                for account, entry in detention.holders.items()
            }
            detention._log(
                change_entry(
                    "CONFIRMED",
                    self.at,
                    self.principal,
                    self.reason,
                    reference=detention.reference,
                    proposal=self.proposal,
                )
            )

    # -- creation and commands -----------------------------------------------------

    @classmethod
    def start(
        cls, project: str | Origin, unit_type: UnitType | str = UnitType.CCER
    ) -> OriginDetention:
        """The (not yet detaining) record of an origin (a project id: that project's);
        the application starts it on the origin's first detention and calls
        :meth:`detain` on it in the same save."""
        if isinstance(project, Origin):
            origin = project
        else:
            origin = Origin(OriginKind.PROJECT, check_origin(project, unit_type))
        return cls._create(
            cls.Started,
            id=cls.id_for_origin(origin),
            project=origin.project,
            origin=origin.key,
        )

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
                f"{self._named} is already detained under {self.reference}",
                project=self.project or self.origin.key,
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
                f"{self._named} is not detained",
                project=self.project or self.origin.key,
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

    def resolve(self, projects: Iterable[str], *, at: datetime) -> bool:
        """Record the projects a predicate origin matched when imposed (the application
        asks the project records in the imposition's save); False for a project or unit
        class origin (its project is its key) or a retry (resolved already)."""
        aware(at)
        if not self.origin.kind.is_predicate:
            return False
        if not self.is_active:
            raise DetentionNotActive(
                f"origin {self.origin} is not detained", origin=self.origin.key
            )
        if any(e.get("change") == "PROJECTS_RESOLVED" for e in self._this_case()):
            return False
        self.trigger_event(self.ProjectsResolved, projects=sorted(set(projects)), at=at)
        return True

    def add_project(
        self,
        project_id: str,
        details: ProjectDetails,
        *,
        reference: str,
        principal: Principal | str,
        at: datetime,
    ) -> bool:
        """Cover a project registered (under ``reference``) while this detention is in
        force, if its record matches the predicate; False if it does not, the detention
        is not in force, or it is covered already."""
        aware(at)
        origin = self.origin
        if not (self.is_active and origin.kind.is_predicate):
            return False
        if project_id in self.resolved or not origin.matches_project(project_id, details):
            return False
        field = origin.kind.value.lower()
        self.trigger_event(
            self.ProjectMatched,
            project=project_id,
            why=f"registered under {reference}: {field} {getattr(details, field)}",
            principal=principal_name(principal),
            at=at,
        )
        return True

    @property
    def _named(self) -> str:
        """How messages name the origin: ``project P-1`` as before kinds, else its key."""
        return f"project {self.project}" if self.project else f"origin {self.origin}"

    def _this_case(self) -> list[dict[str, Any]]:
        """The history entries since the current detention was imposed."""
        for position in range(len(self.history) - 1, -1, -1):
            if self.history[position].get("change") == "DETAINED":
                return self.history[position:]
        return []

    def notify(
        self, account_id: str, quantity: int, *, at: datetime, days: int | None = None
    ) -> bool:
        """Notify a holder of the active detention, with a deadline ``days`` (default
        ``DEFAULT_REBUTTAL_DAYS``) after ``at``; False if it was notified already."""
        aware(at)
        if not self.is_active:
            raise DetentionNotActive(
                f"origin {self.origin} is not detained", origin=self.origin.key
            )
        if account_id in self.holders:
            return False
        deadline = at + timedelta(days=check_rebuttal_days(days))
        self.trigger_event(
            self.HolderNotified, account_id=account_id, quantity=quantity, deadline=deadline, at=at
        )
        return True

    def submit_rebuttal(
        self,
        *,
        account_id: str,
        rebuttal_id: str,
        statement: str,
        evidence: Sequence[str],
        principal: Principal | str,
        at: datetime,
    ) -> bool:
        """Record a notified holder's rebuttal, before its deadline (the deadline itself
        is too late); True if this call did, False for a retry of the same rebuttal."""
        check_client_id(rebuttal_id, "rebuttal id")
        check_statement(statement)
        digests = check_evidence_digests(evidence)
        aware(at)
        holder = self._notified(account_id)
        if holder.status is not HolderStatus.NOTIFIED:
            same = (holder.rebuttal_id, holder.statement, list(holder.evidence)) == (
                rebuttal_id,
                statement,
                digests,
            )
            if same:
                return False
            raise RebuttalAlreadySubmitted(
                f"{account_id} already submitted rebuttal {holder.rebuttal_id} ({holder.status})",
                account=account_id,
                rebuttal=holder.rebuttal_id,
                status=holder.status.value,
            )
        if at >= holder.deadline:
            raise RebuttalDeadlinePassed(
                f"the rebuttal period of {account_id} ended at {holder.deadline.isoformat()}",
                account=account_id,
                deadline=holder.deadline.isoformat(),
                detention=self.reference,
            )
        self.trigger_event(
            self.RebuttalSubmitted,
            account_id=account_id,
            rebuttal_id=rebuttal_id,
            statement=statement,
            evidence=digests,
            principal=principal_name(principal),
            at=at,
        )
        return True

    def clear_holder(
        self,
        *,
        account_id: str,
        blocks: Iterable[SerialBlock],
        evidence: str,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
    ) -> bool:
        """Clear one holder's units on its rebuttal: ``blocks`` (what it holds of the
        origin now) move again. True if this call did, False for a retry."""
        check_evidence(evidence)
        check_reason(reason)
        aware(at)
        holder = self._notified(account_id)
        if holder.status is HolderStatus.CLEARED:
            return False
        if holder.status is not HolderStatus.UNDER_REVIEW:
            raise RebuttalNotSubmitted(
                f"{account_id} has submitted no rebuttal to clear it on ({holder.status})",
                account=account_id,
                status=holder.status.value,
            )
        self.trigger_event(
            self.HolderCleared,
            account_id=account_id,
            blocks=[block_row(b) for b in blocks if self.matches(b.unit_class)],
            reason=reason,
            evidence=evidence,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
        )
        return True

    def confirm(
        self,
        *,
        reason: str,
        principal: Principal | str,
        at: datetime,
        proposal: str = "",
        forfeited: dict[str, int] | None = None,
        invalidated: Sequence[tuple[str, int, int]] = (),
    ) -> bool:
        """Confirm the detention: the application forfeits what is still detained in
        the same save (``forfeited`` per account; ``invalidated``: company, year, tonnes
        surrendered). Refused while a notified holder may still rebut; True if this call
        did, False for a retry (already confirmed)."""
        check_reason(reason)
        if self.is_confirmed:
            return False
        self.ensure_confirmable(at)
        self.trigger_event(
            self.Confirmed,
            reason=reason,
            principal=principal_name(principal),
            at=at,
            proposal=proposal,
            forfeited=dict(forfeited or {}),
            invalidated=[[company, year, tonnes] for company, year, tonnes in invalidated],
        )
        return True

    def ensure_confirmable(self, at: datetime) -> None:
        """Detained, and no notified holder may still rebut at ``at``."""
        aware(at)
        if not self.is_active:
            raise DetentionNotActive(
                f"origin {self.origin} is not detained", origin=self.origin.key
            )
        waiting = [
            h for h in self.notified if h.status is HolderStatus.NOTIFIED and at < h.deadline
        ]
        if waiting:
            first = waiting[0]
            raise RebuttalPeriodOpen(
                f"{len(waiting)} notified holders may still rebut (first: {first.account_id} "
                f"until {first.deadline.isoformat()})",
                account=first.account_id,
                deadline=first.deadline.isoformat(),
                waiting=len(waiting),
            )

    def _notified(self, account_id: str) -> DetainedHolder:
        if not self.is_active:
            raise DetentionNotActive(
                f"origin {self.origin} is not detained",
                origin=self.origin.key,
                status=self.status_name,
            )
        holder = self.holder(account_id)
        if holder is None:
            raise HolderNotNotified(
                f"{account_id} was not notified of the detention of {self.origin} "
                f"under {self.reference}",
                account=account_id,
                detention=self.reference,
            )
        return holder

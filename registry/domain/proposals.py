"""Four-eyes proposals: a regulator's action takes effect only when another regulator approves.

A proposal records *what* is to be done (a kind and a JSON payload the application
interprets), *who* proposed it and why, and its decision: approved by a different
principal, rejected, or expired unanswered. After approval the application carries the
action out and records the outcome here (executed, with a reference to what it produced,
or failed, with the refusal it met), so the proposal is the complete audit record.

Rules worth knowing:

- Four eyes compares the *full* principal (``party/name``): ``mee/alice`` cannot approve
  her own proposal, but ``mee/bob`` may. Two regulators of the same party approving each
  other is the point of the rule; that both are regulators is the application's check.
- The proposer may reject (withdraw) their own proposal: refusing needs no second pair
  of eyes, since nothing takes effect.
- A proposal is expired from ``expires_at`` on, inclusive: at ``now == expires_at`` it can
  no longer be approved or rejected, and ``expire`` may record it as expired.
- Retries are answered, not refused: the same ``propose`` content is a replay (compare
  :meth:`Proposal.ensure_same_content`), the same approver approving again, the same
  rejection and the same recorded outcome trigger no event.
- Time is always passed in (``now``, timezone-aware); the domain never reads the clock.
- Who acted *in which jurisdiction*: the proposer's and the approver's provinces (a
  provincial regulator's grant; empty: national) are recorded with the proposal and the
  approval, so the proposal alone answers "who did what, for which province" even after
  the grants change.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from registry.domain.errors import (
    InvalidCommand,
    ProposalExistsWithDifferentContent,
    ProposalExpired,
    ProposalNotApproved,
    ProposalNotExpired,
    ProposalNotPending,
    RegistryError,
    SelfApprovalForbidden,
)
from registry.domain.ids import NAMESPACE, check_client_id
from registry.domain.reasons import check_reason
from registry.domain.transactions import Principal

MIN_VALIDITY_SECONDS = 3600
MAX_VALIDITY_SECONDS = 90 * 24 * 3600
DEFAULT_VALIDITY_SECONDS = 7 * 24 * 3600
"""Long enough for a second regulator to be found, short enough that a stale proposal
cannot be approved months later against a changed ledger."""

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""A proposal's payload as stored (compact JSON, UTF-8), a bound on what one proposal
(one event) makes the event store write under its table lock: an allocation table of
10,000 rows with reasons of up to about 250 characters fits; a longer one is proposed
in parts."""

MAX_PAYLOAD_DEPTH = 32
"""Far more than any action's parameters need (an allocation table is 3 deep); checking
and storing a payload recurse once per level."""

RESERVED_KEY = "_type_"
"""The event store's JSON transcoder reads ``{"_type_": ..., "_data_": ...}`` as a custom
type; a payload holding that key would not come back as it went in."""


class ProposalKind(StrEnum):
    ISSUANCE = "ISSUANCE"
    ALLOCATION_TABLE = "ALLOCATION_TABLE"
    REVERSAL = "REVERSAL"
    REGULATOR_CANCELLATION = "REGULATOR_CANCELLATION"
    ACCOUNT_FREEZE = "ACCOUNT_FREEZE"
    ACCOUNT_UNFREEZE = "ACCOUNT_UNFREEZE"
    BLOCK_FREEZE = "BLOCK_FREEZE"
    BLOCK_RELEASE = "BLOCK_RELEASE"
    ORIGIN_DETENTION = "ORIGIN_DETENTION"
    ORIGIN_CLEARANCE = "ORIGIN_CLEARANCE"
    MARKET_HALT = "MARKET_HALT"
    MARKET_RESUMPTION = "MARKET_RESUMPTION"
    RULE_CHANGE = "RULE_CHANGE"
    COMPLIANCE_FINE = "COMPLIANCE_FINE"
    """A fine on a shortfall (Decree 775, Art. 24): ``RecordComplianceFine``."""
    DEDUCTION = "DEDUCTION"
    """The deduction step of a closed year: ``EnforceDeductions``."""
    ROLE_GRANT = "ROLE_GRANT"
    """An administrator's grant of a four-eyes role (``registry.domain.access``): proposed
    and approved by two administrators through ``AccessService.GrantRole``, kept under
    the reserved party ``system`` (``ACCESS_SCOPE``) so that any administrator finds it
    by its grant id."""
    VERIFIED_EMISSIONS = "VERIFIED_EMISSIONS"
    """A whole table of verified emissions figures (``RecordVerifiedEmissions``): they fix
    every company's obligation, so one regulator alone does not record them."""
    YEAR_CLOSING = "YEAR_CLOSING"
    """Closing a compliance year (``CloseComplianceYear``): every shortfall is fixed."""
    COURT_ORDER_TRANSFER = "COURT_ORDER_TRANSFER"
    """Transfers between holders outside the exchange, each with its reference (a
    court's case number, the merger or split decision, the exchange's ticket): the
    transaction kinds of the same names (``registry.domain.ledger.ORDERED_TRANSFERS``)."""
    MERGER_TRANSFER = "MERGER_TRANSFER"
    SPLIT_TRANSFER = "SPLIT_TRANSFER"
    EXCHANGE_CORRECTION = "EXCHANGE_CORRECTION"
    ORIGIN_HOLDER_CLEARANCE = "ORIGIN_HOLDER_CLEARANCE"
    """One holder's units cleared of a detention on its rebuttal (docs/origins.md)."""
    ORIGIN_CONFIRMATION = "ORIGIN_CONFIRMATION"
    """A detention confirmed: what it still holds is forfeited everywhere, and
    surrendered units of the origin are invalidated (docs/origins.md)."""
    PROJECT_REGISTRATION = "PROJECT_REGISTRATION"
    """Registering a CCER project (``RegisterProject``, ``registry.domain.projects``)."""
    PROJECT_CHANGE = "PROJECT_CHANGE"
    """Changing a project's details (``UpdateProject``)."""
    PROJECT_SUSPENSION = "PROJECT_SUSPENSION"
    PROJECT_REINSTATEMENT = "PROJECT_REINSTATEMENT"
    PROJECT_DEREGISTRATION = "PROJECT_DEREGISTRATION"


ACCESS_SCOPE = "system"
"""The party access-change proposals are kept under (the reserved party no principal
has, so no regulator's proposal id collides with a grant id)."""
ACCESS_KINDS = frozenset({ProposalKind.ROLE_GRANT})
"""Proposals administrators decide, not regulators."""


class ProposalStatus(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    """Approved; the application has not recorded the outcome of carrying it out yet."""
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    """Approved, but carrying it out was refused by the ledger's state at the time."""


APPROVED_STATES = frozenset(
    {ProposalStatus.APPROVED, ProposalStatus.EXECUTED, ProposalStatus.FAILED}
)


# -- validation ---------------------------------------------------------------------


def parse_proposal_kind(value: str) -> ProposalKind:
    try:
        return ProposalKind(value)
    except ValueError:
        raise InvalidCommand(
            f"unknown proposal kind {value!r}", reason="UNKNOWN_PROPOSAL_KIND"
        ) from None


def check_validity(seconds: int) -> int:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not MIN_VALIDITY_SECONDS <= seconds <= MAX_VALIDITY_SECONDS
    ):
        raise InvalidCommand(
            f"proposal validity must be {MIN_VALIDITY_SECONDS}..{MAX_VALIDITY_SECONDS} "
            f"seconds, got {seconds!r}",
            reason="INVALID_VALIDITY_PERIOD",
        )
    return seconds


def check_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return a plain-JSON copy (tuples become lists), so what is stored, fingerprinted and
    snapshotted is exactly what a replay from JSON gives back."""
    if not isinstance(payload, Mapping):
        raise InvalidCommand("proposal payload must be an object", reason="INVALID_PAYLOAD")
    if _depth(payload) > MAX_PAYLOAD_DEPTH:
        raise InvalidCommand(
            f"proposal payload is nested over {MAX_PAYLOAD_DEPTH} deep",
            reason="INVALID_PAYLOAD",
            field="payload",
        )
    _check_json(payload, "payload")
    text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    check_payload_size(len(text.encode()), "payload")
    normal: dict[str, Any] = json.loads(text)
    return normal


def check_payload_size(size_bytes: int, field: str) -> None:
    """At most ``MAX_PAYLOAD_BYTES``: a larger table is proposed in parts."""
    if size_bytes > MAX_PAYLOAD_BYTES:
        raise InvalidCommand(
            f"the proposal payload is {size_bytes} bytes, over the limit of "
            f"{MAX_PAYLOAD_BYTES}: propose it in parts",
            reason="PAYLOAD_TOO_LARGE",
            field=field,
            limit_bytes=MAX_PAYLOAD_BYTES,
            size_bytes=size_bytes,
        )


def _depth(value: object) -> int:
    """How deep lists and objects nest in ``value`` (counted without recursion, so
    that any depth is measured rather than overflowing the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[object] = (
            item.values()
            if isinstance(item, Mapping)
            else item
            if isinstance(item, list | tuple)
            else ()
        )
        for child in children:
            if isinstance(child, Mapping | list | tuple):
                if depth + 1 > MAX_PAYLOAD_DEPTH:
                    return depth + 1
                stack.append((child, depth + 1))
        deepest = max(deepest, depth)
    return deepest


def _storable(text: str) -> bool:
    """Text the event store can hold: UTF-8 (JSON's ``\\ud800`` escapes decode to lone
    surrogates, which it is not) and no NUL (which PostgreSQL's text cannot hold)."""
    return "\x00" not in text and not _SURROGATE.search(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_json(value: object, path: str) -> None:
    if isinstance(value, str) and not _storable(value):
        raise InvalidCommand(
            f"{path} holds a NUL or a lone surrogate (not UTF-8)",
            reason="INVALID_PAYLOAD",
            field=path,
        )
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if math.isfinite(value):
            return
        raise InvalidCommand(f"{path} is not a finite number", reason="INVALID_PAYLOAD", field=path)
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or key == RESERVED_KEY or not _storable(key):
                raise InvalidCommand(
                    f"{path} has key {key!r}; keys must be text other "
                    f"than {RESERVED_KEY!r}, without NUL or lone surrogates",
                    reason="INVALID_PAYLOAD",
                    field=path,
                )
            _check_json(item, f"{path}.{key}")
        return
    raise InvalidCommand(
        f"{path} holds a {type(value).__name__}, which is not JSON",
        reason="INVALID_PAYLOAD",
        field=path,
    )


def proposal_fingerprint(kind: ProposalKind, payload: Mapping[str, Any]) -> str:
    """What a proposal *does*: kind and payload. The reason and validity are not part of
    it, so a retry that words the reason differently is still the same proposal."""
    canonical = json.dumps(
        {"kind": kind.value, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _aware(now: datetime) -> datetime:
    """A naive time is a defect of the caller, not a client error: fail loudly."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"time must be timezone-aware, got {now!r}")
    return now


# -- the aggregate ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalView:
    """Everything a client may see of a proposal, flat, for API results and listings."""

    party: str
    proposal_id: str
    kind: ProposalKind
    payload: dict[str, Any]
    status: ProposalStatus
    proposer: str
    reason: str
    created_at: datetime | None
    expires_at: datetime | None
    approver: str
    approved_at: datetime | None
    rejected_by: str
    rejection_reason: str
    rejected_at: datetime | None
    expired_at: datetime | None
    result: str
    outcome_at: datetime | None
    failure_reason: str
    failure_message: str
    version: int
    proposer_provinces: tuple[str, ...] = ()
    """The proposer's jurisdiction when it proposed: its provinces, or () national."""
    approver_provinces: tuple[str, ...] = ()
    rejecter_provinces: tuple[str, ...] = ()
    """The jurisdiction of whoever rejected (or withdrew) it: provinces, or () national."""


class Proposal(Aggregate):
    """One four-eyes proposal. Guard methods raise before any event is triggered."""

    TOPIC = "registry.Proposal"

    def __init__(self) -> None:
        # Primitive state only (datetimes go through the store's ISO transcoding), so
        # snapshots round-trip through JSON unchanged.
        self.party = ""
        self.proposal_id = ""
        self.kind_name = ""
        self.payload: dict[str, Any] = {}
        self.fingerprint = ""
        self.proposer = ""
        self.proposer_provinces: list[str] = []
        self.approver_provinces: list[str] = []
        self.rejecter_provinces: list[str] = []
        self.reason = ""
        self.validity_seconds = 0
        self.created_at: datetime | None = None
        self.expires_at: datetime | None = None
        self.status_name = ProposalStatus.PENDING.value
        self.approver = ""
        self.approved_at: datetime | None = None
        self.rejected_by = ""
        self.rejection_reason = ""
        self.rejected_at: datetime | None = None
        self.expired_at: datetime | None = None
        self.result = ""
        self.outcome_at: datetime | None = None
        self.failure_reason = ""
        self.failure_message = ""
        self.failure_metadata: dict[str, str] = {}

    @staticmethod
    @lru_cache(maxsize=4096)
    def id_for(party: str, proposal_id: str) -> UUID:
        """Scoped by the proposing party: one party's ids never collide with another's."""
        return uuid5(NAMESPACE, f"proposal:{party}:{proposal_id}")

    @property
    def kind(self) -> ProposalKind:
        return ProposalKind(self.kind_name)

    @property
    def status(self) -> ProposalStatus:
        return ProposalStatus(self.status_name)

    @property
    def ref(self) -> str:
        return f"{self.party}:{self.proposal_id}"

    @property
    def is_approved(self) -> bool:
        """Approved by a second regulator (whatever came of carrying it out)."""
        return self.status in APPROVED_STATES

    # -- events ---------------------------------------------------------------

    class Created(Aggregate.Created):
        TOPIC = "registry.Proposal.Created"

    class Proposed(Aggregate.Created):
        """v2 adds the proposer's provinces (a provincial regulator; empty: national)."""

        TOPIC = "registry.Proposal.Proposed"
        class_version = 2
        party: str
        proposal_id: str
        kind: str
        payload: dict[str, Any]
        fingerprint: str
        proposer: str
        reason: str
        validity_seconds: int
        created_at: datetime
        expires_at: datetime
        proposer_provinces: list[str]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Proposed before provincial regulators existed: by a national one."""
            state["proposer_provinces"] = []

        def apply(self, proposal: Proposal) -> None:
            proposal.party = self.party
            proposal.proposal_id = self.proposal_id
            proposal.kind_name = self.kind
            proposal.payload = copy.deepcopy(self.payload)
            proposal.fingerprint = self.fingerprint
            proposal.proposer = self.proposer
            proposal.reason = self.reason
            proposal.validity_seconds = self.validity_seconds
            proposal.created_at = self.created_at
            proposal.expires_at = self.expires_at
            proposal.proposer_provinces = list(self.proposer_provinces)

    class Approved(Aggregate.Event):
        """v2 adds the approver's provinces (a provincial regulator; empty: national)."""

        TOPIC = "registry.Proposal.Approved"
        class_version = 2
        approver: str
        at: datetime
        approver_provinces: list[str]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Approved before provincial regulators existed: by a national one."""
            state["approver_provinces"] = []

        def apply(self, proposal: Proposal) -> None:
            proposal.status_name = ProposalStatus.APPROVED.value
            proposal.approver = self.approver
            proposal.approved_at = self.at
            proposal.approver_provinces = list(self.approver_provinces)

    class Rejected(Aggregate.Event):
        """v2 adds the rejecter's provinces (a provincial regulator; empty: national)."""

        TOPIC = "registry.Proposal.Rejected"
        class_version = 2
        by: str
        reason: str
        at: datetime
        rejecter_provinces: list[str]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Rejected before rejections recorded a jurisdiction: none is known, so
            none is claimed (empty, as a national regulator's)."""
            state["rejecter_provinces"] = []

        def apply(self, proposal: Proposal) -> None:
            proposal.status_name = ProposalStatus.REJECTED.value
            proposal.rejected_by = self.by
            proposal.rejection_reason = self.reason
            proposal.rejected_at = self.at
            proposal.rejecter_provinces = list(self.rejecter_provinces)

    class Expired(Aggregate.Event):
        TOPIC = "registry.Proposal.Expired"
        at: datetime

        def apply(self, proposal: Proposal) -> None:
            proposal.status_name = ProposalStatus.EXPIRED.value
            proposal.expired_at = self.at

    class Executed(Aggregate.Event):
        TOPIC = "registry.Proposal.Executed"
        result: str
        at: datetime

        def apply(self, proposal: Proposal) -> None:
            proposal.status_name = ProposalStatus.EXECUTED.value
            proposal.result = self.result
            proposal.outcome_at = self.at

    class ExecutionFailed(Aggregate.Event):
        TOPIC = "registry.Proposal.ExecutionFailed"
        refusal_reason: str
        refusal_message: str
        refusal_metadata: dict[str, str]
        at: datetime

        def apply(self, proposal: Proposal) -> None:
            proposal.status_name = ProposalStatus.FAILED.value
            proposal.failure_reason = self.refusal_reason
            proposal.failure_message = self.refusal_message
            proposal.failure_metadata = dict(self.refusal_metadata)
            proposal.outcome_at = self.at

    # -- creation -------------------------------------------------------------------

    @classmethod
    def propose(
        cls,
        *,
        proposal_id: str,
        kind: ProposalKind | str,
        payload: Mapping[str, Any],
        reason: str,
        principal: Principal,
        now: datetime,
        validity_seconds: int = DEFAULT_VALIDITY_SECONDS,
        scope: str | None = None,
        provinces: Iterable[str] = (),
    ) -> Proposal:
        """A new pending proposal under ``principal``'s party (or ``scope``: access
        changes are kept under ``ACCESS_SCOPE``), made in ``provinces`` (the proposer's
        jurisdiction; none: national). Nothing takes effect yet.

        Before calling this for an id that may exist, the application loads it and asks
        :meth:`ensure_same_content`: a retry must not create a second proposal."""
        party = principal.party if scope is None else scope
        check_client_id(proposal_id, "proposal id")
        kind = kind if isinstance(kind, ProposalKind) else parse_proposal_kind(kind)
        normal = check_payload(payload)
        check_reason(reason)
        check_validity(validity_seconds)
        _aware(now)
        return cls._create(
            cls.Proposed,
            id=cls.id_for(party, proposal_id),
            party=party,
            proposal_id=proposal_id,
            kind=kind.value,
            payload=normal,
            fingerprint=proposal_fingerprint(kind, normal),
            proposer=str(principal),
            reason=reason,
            validity_seconds=validity_seconds,
            created_at=now,
            expires_at=now + timedelta(seconds=validity_seconds),
            proposer_provinces=sorted(provinces),
        )

    # -- guards and commands ------------------------------------------------------

    def ensure_same_content(self, kind: ProposalKind | str, payload: Mapping[str, Any]) -> None:
        """A retried ``propose`` with the same kind and payload is a replay (answer with
        this proposal); different content under the same id is refused."""
        kind = kind if isinstance(kind, ProposalKind) else parse_proposal_kind(kind)
        if proposal_fingerprint(kind, check_payload(payload)) != self.fingerprint:
            raise ProposalExistsWithDifferentContent(
                f"proposal {self.ref} exists with other content (a {self.kind})", proposal=self.ref
            )

    def is_due(self, now: datetime) -> bool:
        """Pending at or after ``expires_at``: it can no longer be decided."""
        return (
            self.status is ProposalStatus.PENDING
            and self.expires_at is not None
            and _aware(now) >= self.expires_at
        )

    def status_at(self, now: datetime) -> ProposalStatus:
        """The status a reader should see: a due proposal reads EXPIRED before the
        ``expire`` sweep records it."""
        return ProposalStatus.EXPIRED if self.is_due(now) else self.status

    def ensure_pending(self, now: datetime) -> None:
        """Refused unless it can still be decided: pending and not yet expired."""
        self._ensure_pending(now)

    def _ensure_pending(self, now: datetime) -> None:
        if self.status is not ProposalStatus.PENDING:
            raise ProposalNotPending(
                f"proposal {self.ref} is {self.status}", proposal=self.ref, status=self.status
            )
        if self.is_due(now):
            raise ProposalExpired(
                f"proposal {self.ref} expired at {self.expires_at}",
                proposal=self.ref,
                expires_at=self.expires_at,
            )

    def approve(self, principal: Principal, now: datetime, provinces: Iterable[str] = ()) -> bool:
        """Approve as a second regulator (in ``provinces``, its jurisdiction; none:
        national); True if this call approved it (the application then carries the
        action out), False for a retry by the same approver."""
        _aware(now)
        who = str(principal)
        if self.approver == who and self.is_approved:
            return False
        if who == self.proposer:
            raise SelfApprovalForbidden(
                f"{who} proposed {self.ref}; another regulator must approve it",
                proposal=self.ref,
                principal=who,
            )
        self._ensure_pending(now)
        self.trigger_event(
            self.Approved, approver=who, at=now, approver_provinces=sorted(provinces)
        )
        return True

    def reject(
        self, principal: Principal, reason: str, now: datetime, provinces: Iterable[str] = ()
    ) -> bool:
        """Reject (or, by the proposer, withdraw) in ``provinces``, its jurisdiction
        (none: national); True if this call rejected it, False for a retry of the same
        rejection."""
        check_reason(reason)
        _aware(now)
        who = str(principal)
        if (
            self.status is ProposalStatus.REJECTED
            and self.rejected_by == who
            and self.rejection_reason == reason
        ):
            return False
        self._ensure_pending(now)
        self.trigger_event(
            self.Rejected, by=who, reason=reason, at=now, rejecter_provinces=sorted(provinces)
        )
        return True

    def expire(self, now: datetime) -> bool:
        """Record that a due pending proposal expired; False if it already was."""
        _aware(now)
        if self.status is ProposalStatus.EXPIRED:
            return False
        if self.status is not ProposalStatus.PENDING:
            raise ProposalNotPending(
                f"proposal {self.ref} is {self.status}", proposal=self.ref, status=self.status
            )
        if not self.is_due(now):
            raise ProposalNotExpired(
                f"proposal {self.ref} expires at {self.expires_at}",
                proposal=self.ref,
                expires_at=self.expires_at,
            )
        self.trigger_event(self.Expired, at=now)
        return True

    def _ensure_awaiting_outcome(self) -> None:
        if self.status is not ProposalStatus.APPROVED:
            raise ProposalNotApproved(
                f"proposal {self.ref} is {self.status}; only an approved proposal "
                "awaiting its outcome can record one",
                proposal=self.ref,
                status=self.status,
            )

    def mark_executed(self, result: str, now: datetime) -> bool:
        """Record what carrying the approved action out produced (e.g. a transaction id);
        False if exactly this outcome was recorded before."""
        if not isinstance(result, str) or not result:
            raise ValueError("an executed proposal names what it produced")
        _aware(now)
        if self.status is ProposalStatus.EXECUTED and self.result == result:
            return False
        self._ensure_awaiting_outcome()
        self.trigger_event(self.Executed, result=result, at=now)
        return True

    def mark_failed(self, error: RegistryError, now: datetime) -> bool:
        """Record the refusal the approved action met (the ledger changed since it was
        proposed); False if exactly this refusal was recorded before."""
        _aware(now)
        if (
            self.status is ProposalStatus.FAILED
            and self.failure_reason == error.reason
            and self.failure_message == error.message
        ):
            return False
        self._ensure_awaiting_outcome()
        self.trigger_event(
            self.ExecutionFailed,
            refusal_reason=error.reason,
            refusal_message=error.message,
            refusal_metadata=dict(error.metadata),
            at=now,
        )
        return True

    # -- reading ------------------------------------------------------------------

    def view(self, now: datetime | None = None) -> ProposalView:
        """The proposal as a client sees it; given ``now``, a due proposal shows EXPIRED."""
        return ProposalView(
            party=self.party,
            proposal_id=self.proposal_id,
            kind=self.kind,
            payload=copy.deepcopy(self.payload),
            status=self.status if now is None else self.status_at(now),
            proposer=self.proposer,
            reason=self.reason,
            created_at=self.created_at,
            expires_at=self.expires_at,
            approver=self.approver,
            approved_at=self.approved_at,
            rejected_by=self.rejected_by,
            rejection_reason=self.rejection_reason,
            rejected_at=self.rejected_at,
            expired_at=self.expired_at,
            result=self.result,
            outcome_at=self.outcome_at,
            failure_reason=self.failure_reason,
            failure_message=self.failure_message,
            version=self.version,
            proposer_provinces=tuple(self.proposer_provinces),
            approver_provinces=tuple(self.approver_provinces),
            rejecter_provinces=tuple(self.rejecter_provinces),
        )

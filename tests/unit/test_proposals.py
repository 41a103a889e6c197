"""Four-eyes proposals: lifecycle, guards, replays, expiry and persistence shape. No I/O."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex

from registry.domain.errors import (
    REFUSAL_TYPES,
    Conflict,
    InsufficientUnits,
    InvalidCommand,
    ProposalExistsWithDifferentContent,
    ProposalExpired,
    ProposalNotApproved,
    ProposalNotExpired,
    ProposalNotPending,
    Refused,
    SelfApprovalForbidden,
)
from registry.domain.proposals import (
    ACCESS_SCOPE,
    DEFAULT_VALIDITY_SECONDS,
    MAX_VALIDITY_SECONDS,
    MIN_VALIDITY_SECONDS,
    Proposal,
    ProposalKind,
    ProposalStatus,
    proposal_fingerprint,
)
from registry.domain.transactions import Principal

ALICE = Principal("mee", "alice")
BOB = Principal("mee", "bob")
CAROL = Principal("mee", "carol")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOUR = 3600
ISSUE = {"unit_type": "CEA", "vintage": 2025, "quantity": 1_000_000, "transaction_id": "ISS-2025-1"}


def proposal(
    validity: int = 24 * HOUR,
    payload: dict[str, Any] | None = None,
    kind: ProposalKind = ProposalKind.ISSUANCE,
) -> Proposal:
    return Proposal.propose(
        proposal_id="P-1",
        kind=kind,
        payload=ISSUE if payload is None else payload,
        reason="2025 allocation budget",
        principal=ALICE,
        now=T0,
        validity_seconds=validity,
    )


def events(p: Proposal) -> list[type]:
    return [type(e) for e in p.collect_events()]


def reason_of(raised: pytest.ExceptionInfo[Any]) -> str:
    return str(raised.value.reason)


# -- proposing ------------------------------------------------------------------------


def test_propose_records_everything_and_nothing_takes_effect() -> None:
    p = proposal()
    assert p.id == Proposal.id_for("mee", "P-1")
    assert (p.party, p.proposal_id, p.kind, p.proposer) == (
        "mee",
        "P-1",
        ProposalKind.ISSUANCE,
        "mee/alice",
    )
    assert p.payload == ISSUE and p.payload is not ISSUE
    assert p.reason == "2025 allocation budget"
    assert p.created_at == T0 and p.expires_at == T0 + timedelta(hours=24)
    assert p.status is ProposalStatus.PENDING and not p.is_approved
    assert p.approver == "" and p.approved_at is None
    assert events(p) == [Proposal.Proposed]


def test_ids_are_scoped_by_the_proposing_party() -> None:
    assert Proposal.id_for("mee", "P-1") != Proposal.id_for("gd-eeb", "P-1")
    assert Proposal.id_for("mee", "P-1") == Proposal.id_for("mee", "P-1")
    other = Proposal.propose(
        proposal_id="P-1",
        kind=ProposalKind.ISSUANCE,
        payload=ISSUE,
        reason="r",
        principal=Principal("gd-eeb", "alice"),
        now=T0,
    )
    assert other.id == Proposal.id_for("gd-eeb", "P-1") != proposal().id


def test_every_kind_can_be_proposed_and_kinds_parse_from_text() -> None:
    for kind in ProposalKind:
        assert proposal(kind=kind).kind is kind
    p = Proposal.propose(
        proposal_id="P-2", kind="MARKET_HALT", payload={}, reason="r", principal=ALICE, now=T0
    )
    assert p.kind is ProposalKind.MARKET_HALT and p.payload == {}
    with pytest.raises(InvalidCommand) as raised:
        Proposal.propose(
            proposal_id="P-3", kind="PRINT_MONEY", payload={}, reason="r", principal=ALICE, now=T0
        )
    assert reason_of(raised) == "UNKNOWN_PROPOSAL_KIND"


def test_a_reason_is_required_and_bounded() -> None:
    for blank in ("", "   "):
        with pytest.raises(InvalidCommand) as raised:
            Proposal.propose(
                proposal_id="P-1",
                kind=ProposalKind.ISSUANCE,
                payload=ISSUE,
                reason=blank,
                principal=ALICE,
                now=T0,
            )
        assert reason_of(raised) == "MISSING_FIELD"
        assert raised.value.metadata == {"field": "reason"}
    with pytest.raises(InvalidCommand) as raised:
        Proposal.propose(
            proposal_id="P-1",
            kind=ProposalKind.ISSUANCE,
            payload=ISSUE,
            reason="x" * 501,
            principal=ALICE,
            now=T0,
        )
    assert reason_of(raised) == "INVALID_REASON"


def test_the_proposal_id_is_checked() -> None:
    with pytest.raises(InvalidCommand) as raised:
        Proposal.propose(
            proposal_id="bad id!",
            kind=ProposalKind.ISSUANCE,
            payload=ISSUE,
            reason="r",
            principal=ALICE,
            now=T0,
        )
    assert reason_of(raised) == "INVALID_ID"


@pytest.mark.parametrize(
    "seconds", [0, MIN_VALIDITY_SECONDS - 1, MAX_VALIDITY_SECONDS + 1, -HOUR, True, 3600.0]
)
def test_validity_period_is_bounded(seconds: Any) -> None:
    with pytest.raises(InvalidCommand) as raised:
        proposal(validity=seconds)
    assert reason_of(raised) == "INVALID_VALIDITY_PERIOD"


def test_validity_bounds_are_inclusive_and_there_is_a_default() -> None:
    assert proposal(MIN_VALIDITY_SECONDS).expires_at == T0 + timedelta(hours=1)
    assert proposal(MAX_VALIDITY_SECONDS).expires_at == T0 + timedelta(days=90)
    p = Proposal.propose(
        proposal_id="P-1",
        kind=ProposalKind.MARKET_HALT,
        payload={},
        reason="r",
        principal=ALICE,
        now=T0,
    )
    assert p.expires_at == T0 + timedelta(seconds=DEFAULT_VALIDITY_SECONDS)


@pytest.mark.parametrize(
    "payload",
    [
        {"quantity": math.nan},
        {"quantity": math.inf},
        {1: "int key"},
        {"nested": {"_type_": "uuid", "_data_": "x"}},
        {"when": T0},
        {"ids": {1, 2}},
        ["not", "an", "object"],
    ],
)
def test_payload_must_be_plain_json(payload: Any) -> None:
    with pytest.raises(InvalidCommand) as raised:
        proposal(payload=payload)
    assert reason_of(raised) == "INVALID_PAYLOAD"


def test_payload_is_stored_as_plain_json_copy() -> None:
    rows = [("PWR-0001", 100), ("PWR-0002", 200)]
    p = proposal(
        kind=ProposalKind.ALLOCATION_TABLE,
        payload={"year": 2025, "rows": rows, "factor": 0.7, "note": None},
    )
    assert p.payload == {
        "year": 2025,
        "rows": [["PWR-0001", 100], ["PWR-0002", 200]],
        "factor": 0.7,
        "note": None,
    }


def test_time_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Proposal.propose(
            proposal_id="P-1",
            kind=ProposalKind.ISSUANCE,
            payload=ISSUE,
            reason="r",
            principal=ALICE,
            now=datetime(2026, 3, 1),
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        proposal().approve(BOB, datetime(2026, 3, 1, 10))


# -- replay vs different content -----------------------------------------------------


def test_same_content_is_a_replay_different_content_a_conflict() -> None:
    p = proposal()
    p.collect_events()
    p.ensure_same_content(ProposalKind.ISSUANCE, dict(reversed(list(ISSUE.items()))))
    p.ensure_same_content("ISSUANCE", ISSUE)
    assert p.collect_events() == []
    with pytest.raises(ProposalExistsWithDifferentContent) as raised:
        p.ensure_same_content(ProposalKind.ISSUANCE, {**ISSUE, "quantity": 1_000_001})
    assert reason_of(raised) == "PROPOSAL_EXISTS_WITH_DIFFERENT_CONTENT"
    assert isinstance(raised.value, Conflict)
    assert raised.value.metadata == {"proposal": "mee:P-1"}
    with pytest.raises(ProposalExistsWithDifferentContent):
        p.ensure_same_content(ProposalKind.REGULATOR_CANCELLATION, ISSUE)


def test_fingerprint_covers_kind_and_payload_only() -> None:
    a = proposal_fingerprint(ProposalKind.ACCOUNT_FREEZE, {"account_id": "PWR-0001"})
    assert a == proposal_fingerprint(ProposalKind.ACCOUNT_FREEZE, {"account_id": "PWR-0001"})
    assert a != proposal_fingerprint(ProposalKind.ACCOUNT_UNFREEZE, {"account_id": "PWR-0001"})
    assert a != proposal_fingerprint(ProposalKind.ACCOUNT_FREEZE, {"account_id": "PWR-0002"})
    one = Proposal.propose(
        proposal_id="P-1",
        kind=ProposalKind.ISSUANCE,
        payload=ISSUE,
        reason="first wording",
        principal=ALICE,
        now=T0,
    )
    two = Proposal.propose(
        proposal_id="P-1",
        kind=ProposalKind.ISSUANCE,
        payload=ISSUE,
        reason="second wording",
        principal=BOB,
        now=T0 + timedelta(minutes=5),
        validity_seconds=2 * HOUR,
    )
    assert one.fingerprint == two.fingerprint


# -- approval -------------------------------------------------------------------------


def test_a_different_regulator_of_the_same_party_approves() -> None:
    p = proposal()
    assert p.approve(BOB, T0 + timedelta(hours=1))
    assert p.status is ProposalStatus.APPROVED and p.is_approved
    assert (p.approver, p.approved_at) == ("mee/bob", T0 + timedelta(hours=1))
    approved = [e for e in p.collect_events() if isinstance(e, Proposal.Approved)]
    assert [(e.approver, e.at) for e in approved] == [("mee/bob", T0 + timedelta(hours=1))]


def test_the_proposer_cannot_approve_their_own_proposal() -> None:
    p = proposal()
    p.collect_events()
    with pytest.raises(SelfApprovalForbidden) as raised:
        p.approve(Principal("mee", "alice"), T0 + timedelta(minutes=1))
    assert reason_of(raised) == "SELF_APPROVAL_FORBIDDEN"
    assert isinstance(raised.value, Refused)
    assert raised.value.metadata == {"proposal": "mee:P-1", "principal": "mee/alice"}
    # Nothing took effect: still pending, no Approved event.
    assert p.status is ProposalStatus.PENDING and p.approver == ""
    assert p.collect_events() == []


def test_four_eyes_compares_the_full_principal() -> None:
    """Same name in another party is another person; so may approve."""
    p = proposal()
    assert p.approve(Principal("gd-eeb", "alice"), T0)
    assert p.approver == "gd-eeb/alice"


def test_approving_twice_by_the_same_approver_is_a_replay() -> None:
    p = proposal()
    assert p.approve(BOB, T0 + timedelta(minutes=1))
    p.collect_events()
    assert not p.approve(BOB, T0 + timedelta(minutes=2))
    assert p.collect_events() == []
    assert p.approved_at == T0 + timedelta(minutes=1)
    # ... even once the outcome is recorded, and even after the validity period.
    p.mark_executed("transaction:mee:ISS-2025-1", T0 + timedelta(minutes=1))
    p.collect_events()
    assert not p.approve(BOB, T0 + timedelta(days=30))
    assert p.collect_events() == []


def test_a_second_approver_meets_a_decided_proposal() -> None:
    p = proposal()
    p.approve(BOB, T0)
    p.collect_events()
    with pytest.raises(ProposalNotPending) as raised:
        p.approve(CAROL, T0)
    assert reason_of(raised) == "PROPOSAL_NOT_PENDING"
    assert raised.value.metadata["status"] == "APPROVED"
    # The proposer is told the more fundamental reason.
    with pytest.raises(SelfApprovalForbidden):
        p.approve(ALICE, T0)
    assert p.approver == "mee/bob" and p.collect_events() == []


# -- rejection ------------------------------------------------------------------------


def test_rejection_needs_a_reason_and_ends_the_proposal() -> None:
    p = proposal()
    with pytest.raises(InvalidCommand) as raised:
        p.reject(BOB, "", T0)
    assert reason_of(raised) == "MISSING_FIELD"
    assert p.reject(BOB, "quantity exceeds the cap", T0 + timedelta(hours=2))
    assert p.status is ProposalStatus.REJECTED and not p.is_approved
    assert (p.rejected_by, p.rejection_reason, p.rejected_at) == (
        "mee/bob",
        "quantity exceeds the cap",
        T0 + timedelta(hours=2),
    )
    assert events(p) == [Proposal.Proposed, Proposal.Rejected]
    # A rejected proposal can never be approved: nothing takes effect.
    with pytest.raises(ProposalNotPending):
        p.approve(CAROL, T0 + timedelta(hours=3))
    assert p.collect_events() == [] and p.approver == ""


def test_the_same_rejection_again_is_a_replay_another_is_refused() -> None:
    p = proposal()
    p.reject(BOB, "no", T0)
    p.collect_events()
    assert not p.reject(BOB, "no", T0 + timedelta(minutes=1))
    assert p.collect_events() == []
    with pytest.raises(ProposalNotPending):
        p.reject(BOB, "no, really", T0)
    with pytest.raises(ProposalNotPending):
        p.reject(CAROL, "no", T0)


def test_the_proposer_may_withdraw_by_rejecting() -> None:
    p = proposal()
    assert p.reject(ALICE, "withdrawn: wrong vintage", T0)
    assert p.status is ProposalStatus.REJECTED and p.rejected_by == "mee/alice"


def test_an_approved_proposal_cannot_be_rejected() -> None:
    p = proposal()
    p.approve(BOB, T0)
    with pytest.raises(ProposalNotPending):
        p.reject(CAROL, "too late", T0)


# -- expiry ---------------------------------------------------------------------------


def test_expiry_boundary_is_inclusive() -> None:
    """At ``expires_at`` exactly the proposal is expired; one microsecond before it is not."""
    p = proposal(validity=HOUR)
    assert p.expires_at is not None
    just_before, at = p.expires_at - timedelta(microseconds=1), p.expires_at
    assert not p.is_due(just_before) and p.is_due(at)
    assert p.status_at(just_before) is ProposalStatus.PENDING
    assert p.status_at(at) is ProposalStatus.EXPIRED
    p.collect_events()
    with pytest.raises(ProposalExpired) as raised:
        p.approve(BOB, at)
    assert reason_of(raised) == "PROPOSAL_EXPIRED"
    with pytest.raises(ProposalExpired):
        p.reject(BOB, "late", at)
    assert p.status is ProposalStatus.PENDING and p.collect_events() == []
    assert proposal(validity=HOUR).approve(BOB, just_before)


def test_expire_before_its_time_is_refused() -> None:
    p = proposal(validity=HOUR)
    assert p.expires_at is not None
    with pytest.raises(ProposalNotExpired) as raised:
        p.expire(p.expires_at - timedelta(seconds=1))
    assert reason_of(raised) == "PROPOSAL_NOT_EXPIRED"
    assert p.status is ProposalStatus.PENDING


def test_a_due_proposal_expires_once_and_cannot_be_decided() -> None:
    p = proposal(validity=HOUR)
    assert p.expires_at is not None
    later = p.expires_at + timedelta(minutes=5)
    assert p.expire(p.expires_at)
    assert p.status is ProposalStatus.EXPIRED and p.expired_at == p.expires_at
    assert events(p) == [Proposal.Proposed, Proposal.Expired]
    assert not p.expire(later)
    assert p.collect_events() == []
    with pytest.raises(ProposalNotPending):
        p.approve(BOB, later)
    with pytest.raises(ProposalNotPending):
        p.reject(BOB, "x", later)


def test_only_a_pending_proposal_expires() -> None:
    p = proposal(validity=HOUR)
    p.approve(BOB, T0)
    with pytest.raises(ProposalNotPending):
        p.expire(T0 + timedelta(days=1))
    assert p.status is ProposalStatus.APPROVED


# -- execution outcome ---------------------------------------------------------------


def test_executed_after_approval_records_the_result() -> None:
    p = proposal()
    p.approve(BOB, T0)
    assert p.mark_executed("transaction:mee:ISS-2025-1", T0 + timedelta(seconds=1))
    assert p.status is ProposalStatus.EXECUTED and p.is_approved
    assert (p.result, p.outcome_at) == ("transaction:mee:ISS-2025-1", T0 + timedelta(seconds=1))
    assert events(p) == [Proposal.Proposed, Proposal.Approved, Proposal.Executed]
    assert not p.mark_executed("transaction:mee:ISS-2025-1", T0)
    assert p.collect_events() == []
    with pytest.raises(ProposalNotApproved):
        p.mark_executed("transaction:mee:OTHER", T0)
    with pytest.raises(ProposalNotApproved):
        p.mark_failed(InsufficientUnits("x"), T0)


def test_failed_after_approval_records_the_refusal() -> None:
    p = proposal(kind=ProposalKind.REGULATOR_CANCELLATION)
    p.approve(BOB, T0)
    error = InsufficientUnits("PWR-0001 holds 10 CEA, 20 asked", account="PWR-0001")
    assert p.mark_failed(error, T0)
    assert p.status is ProposalStatus.FAILED and p.is_approved
    assert (p.failure_reason, p.failure_message, p.failure_metadata) == (
        "INSUFFICIENT_UNITS",
        "PWR-0001 holds 10 CEA, 20 asked",
        {"account": "PWR-0001"},
    )
    assert events(p) == [Proposal.Proposed, Proposal.Approved, Proposal.ExecutionFailed]
    assert not p.mark_failed(error, T0)
    with pytest.raises(ProposalNotApproved):
        p.mark_executed("transaction:mee:X", T0)


@pytest.mark.parametrize("decide", ["pending", "rejected", "expired"])
def test_no_outcome_without_approval(decide: str) -> None:
    p = proposal(validity=HOUR)
    if decide == "rejected":
        p.reject(BOB, "no", T0)
    elif decide == "expired":
        p.expire(T0 + timedelta(hours=1))
    with pytest.raises(ProposalNotApproved) as raised:
        p.mark_executed("transaction:mee:ISS-2025-1", T0 + timedelta(hours=2))
    assert reason_of(raised) == "PROPOSAL_NOT_APPROVED"
    with pytest.raises(ProposalNotApproved):
        p.mark_failed(InsufficientUnits("x"), T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="names what it produced"):
        p.mark_executed("", T0)
    assert not p.is_approved


# -- views ------------------------------------------------------------------------------


def test_view_shows_the_decision_and_reads_due_proposals_as_expired() -> None:
    p = proposal(validity=HOUR)
    view = p.view()
    assert view.status is ProposalStatus.PENDING and view.kind is ProposalKind.ISSUANCE
    assert (view.party, view.proposal_id, view.proposer) == ("mee", "P-1", "mee/alice")
    assert view.payload == ISSUE and view.version == 1
    view.payload["quantity"] = 0
    assert p.payload["quantity"] == 1_000_000
    assert p.view(T0 + timedelta(hours=1)).status is ProposalStatus.EXPIRED
    p.approve(BOB, T0)
    p.mark_executed("transaction:mee:ISS-2025-1", T0)
    done = p.view(T0 + timedelta(days=1))
    assert (done.status, done.approver, done.result, done.version) == (
        ProposalStatus.EXECUTED,
        "mee/bob",
        "transaction:mee:ISS-2025-1",
        3,
    )


# -- persistence shape ---------------------------------------------------------------


def histories() -> list[Proposal]:
    pending = proposal()
    executed = proposal()
    executed.approve(BOB, T0)
    executed.mark_executed("transaction:mee:ISS-2025-1", T0)
    failed = proposal()
    failed.approve(BOB, T0)
    failed.mark_failed(InsufficientUnits("short", account="PWR-0001"), T0)
    rejected = proposal()
    rejected.reject(BOB, "no", T0)
    expired = proposal(validity=HOUR)
    expired.expire(T0 + timedelta(hours=2))
    return [pending, executed, failed, rejected, expired]


def state(p: Proposal) -> dict[str, Any]:
    return {k: v for k, v in vars(p).items() if k != "_pending_events"}


def test_replaying_collected_events_rebuilds_the_same_state() -> None:
    for original in histories():
        copy: Proposal | None = None
        for event in original.collect_events():
            copy = event.mutate(copy)
        assert isinstance(copy, Proposal)
        assert state(copy) == state(original)


def test_snapshot_round_trips_through_json() -> None:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO()):
        transcoder.register(transcoding)
    for original in histories():
        snapshot = Snapshot.take(original)
        restored = snapshot.mutate(None)
        assert isinstance(restored, Proposal) and state(restored) == state(original)
        state_via_json = transcoder.decode(transcoder.encode(snapshot.state))
        assert state_via_json == snapshot.state
        rebuilt = Snapshot(
            originator_id=original.id,  # type: ignore[call-arg]
            originator_version=original.version,
            timestamp=snapshot.timestamp,
            topic=snapshot.topic,
            state=state_via_json,
        ).mutate(None)
        assert isinstance(rebuilt, Proposal) and state(rebuilt) == state(original)
        assert rebuilt.status is original.status and isinstance(rebuilt.id, UUID)


def test_event_topics_are_stable() -> None:
    assert Proposal.TOPIC == "registry.Proposal"
    assert [
        c.TOPIC
        for c in (
            Proposal.Proposed,
            Proposal.Approved,
            Proposal.Rejected,
            Proposal.Expired,
            Proposal.Executed,
            Proposal.ExecutionFailed,
        )
    ] == [
        f"registry.Proposal.{name}"
        for name in ("Proposed", "Approved", "Rejected", "Expired", "Executed", "ExecutionFailed")
    ]


def test_new_reasons_are_registered() -> None:
    for reason in (
        "SELF_APPROVAL_FORBIDDEN",
        "PROPOSAL_NOT_PENDING",
        "PROPOSAL_EXPIRED",
        "PROPOSAL_NOT_EXPIRED",
        "PROPOSAL_NOT_APPROVED",
        "PROPOSAL_EXISTS_WITH_DIFFERENT_CONTENT",
    ):
        assert reason in REFUSAL_TYPES


def test_an_access_proposal_is_kept_under_the_reserved_scope() -> None:
    """A ROLE_GRANT is found by its grant id whoever approves it: it is kept under party
    ``system`` (which no principal has), not under the proposing administrator's."""
    admin = Principal("mee", "admin")
    proposal = Proposal.propose(
        proposal_id="zhou-reg",
        kind=ProposalKind.ROLE_GRANT,
        payload={"grant_id": "zhou-reg"},
        reason="desk",
        principal=admin,
        now=T0,
        scope=ACCESS_SCOPE,
    )
    assert (proposal.party, proposal.proposer) == ("system", "mee/admin")
    assert proposal.id == Proposal.id_for(ACCESS_SCOPE, "zhou-reg")
    proposal.ensure_pending(T0)

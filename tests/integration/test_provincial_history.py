"""Events written before provincial regulators still load (issue 18 item 8): a version-2
``RoleGranted`` (no ``provinces``) is a national grant, and a version-1 ``Proposed`` /
``Approved`` (no provinces of the proposer or approver) was a national regulator's act.
The stored JSON is written directly, as the previous version wrote it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from registry.application.registry import Registry
from registry.bootstrap import build_registry
from registry.domain.access import AccessControl, Role
from registry.domain.accounts import AccountType, Holder
from registry.domain.proposals import Proposal, ProposalStatus
from registry.domain.transactions import Principal
from registry.settings import Settings

OLD = Principal("mee", "regulator-old")


def stored(
    registry: Registry, aggregate: UUID, version: int, topic: str, state: Any
) -> StoredEvent:
    return StoredEvent(
        originator_id=aggregate,
        originator_version=version,
        topic=topic,
        state=registry.mapper.transcoder.encode(state),
    )


def v2_grant(when: datetime) -> dict[str, Any]:
    """A RoleGranted as version 2 stored it: approver and time, no provinces."""
    return {
        "timestamp": when,
        "class_version": 2,
        "grant_id": "old-reg",
        "party": OLD.party,
        "name": OLD.name,
        "role": "regulator",
        "accounts": ["*"],
        "by": "mee/admin",
        "reason": "granted before provinces",
        "approved_by": "mee/admin-2",
        "proposal": "system:old-reg",
        "at": when,
    }


def v1_proposal(when: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Proposed and its Approved as version 1 stored them (no class_version)."""
    proposed = {
        "timestamp": when,
        "originator_topic": Proposal.TOPIC,
        "party": "mee",
        "proposal_id": "P-OLD",
        "kind": "MARKET_HALT",
        "payload": {"reason": "drill"},
        "fingerprint": "0" * 64,
        "proposer": "mee/regulator-li",
        "reason": "drill",
        "validity_seconds": 3600,
        "created_at": when,
        "expires_at": when,
    }
    approved = {"timestamp": when, "approver": str(OLD), "at": when}
    return proposed, approved


def test_old_grants_are_national_and_old_proposals_national_acts(tmp_path: Path) -> None:
    settings = Settings(f"sqlite:///{tmp_path / 'old.sqlite'}")
    registry = build_registry(settings)
    try:
        registry.access.genesis([(Principal("mee", "admin"), Role.ADMIN)], "founding")
        head = registry.access.current()
        when = head.all_grants()[0].at
        assert when is not None
        proposed, approved = v1_proposal(when)
        proposal_id = Proposal.id_for("mee", "P-OLD")
        registry.recorder.insert_events(
            [
                stored(
                    registry,
                    AccessControl.id_for(),
                    head.version + 1,
                    AccessControl.RoleGranted.TOPIC,
                    v2_grant(when),
                ),
                stored(registry, proposal_id, 1, Proposal.Proposed.TOPIC, proposed),
                stored(registry, proposal_id, 2, Proposal.Approved.TOPIC, approved),
            ]
        )
    finally:
        registry.close()

    reopened = build_registry(settings)  # a fresh process: replayed from the store
    try:
        acl = reopened.access.current()
        [old] = acl.grants_of(OLD)
        assert (old.role, old.provinces, old.provincial) == (Role.REGULATOR, (), False)
        assert old.covers_province("Shandong") and acl.provinces_of(OLD) == ()
        view = reopened.proposals.get("mee", "P-OLD")
        assert (view.status, view.approver) == (ProposalStatus.APPROVED, str(OLD))
        assert (view.proposer_provinces, view.approver_provinces) == ((), ())
        # and the aggregate goes on from it: a provincial grant next to the old one
        reopened.access.grant_role(
            Principal("system", "tests"),
            "sd-reg",
            Principal("sd-eeb", "zhang"),
            "regulator",
            (),
            "Shandong department",
            provinces=["Shandong"],
        )
        again = reopened.access.current()
        assert again.provinces_of(Principal("sd-eeb", "zhang")) == ("Shandong",)
        assert again.grants_of(OLD) == [old]
    finally:
        reopened.close()


def test_a_provincial_proposal_records_both_jurisdictions(tmp_path: Path) -> None:
    """Who did what, by province: the proposal keeps the proposer's and approver's
    provinces as they were when each acted, whatever the grants become."""
    settings = Settings(f"sqlite:///{tmp_path / 'new.sqlite'}")
    registry = build_registry(settings)
    system = Principal("system", "tests")
    zhang, wang = Principal("sd-eeb", "zhang"), Principal("sd-eeb", "wang")
    try:
        registry.access.genesis([(Principal("mee", "admin"), Role.ADMIN)], "founding")
        for grant_id, who, provinces in (("g-z", zhang, ["Shandong"]), ("g-w", wang, [])):
            registry.access.grant_role(
                system, grant_id, who, "regulator", (), "department", provinces=provinces
            )
        registry.open_account(
            system,
            "PWR-SD-0001",
            AccountType.COMPLIANCE,
            Holder("Jinan Power", "91370000163081422B", "POWER", "Shandong"),
        )
        table = {
            "reason": "verification report SD-2025-001",
            "rows": [
                {"account_id": "PWR-SD-0001", "compliance_year": 2025, "verified_emissions": 900}
            ],
        }
        registry.proposals.propose(zhang, "P-VE", "VERIFIED_EMISSIONS", table, "2025")
        done = registry.proposals.approve(wang, "sd-eeb", "P-VE").proposal
        assert done.status is ProposalStatus.EXECUTED
        assert (done.proposer_provinces, done.approver_provinces) == (("Shandong",), ())
        registry.access.revoke_grant(system, "g-z", "moved on")
        assert registry.proposals.get("sd-eeb", "P-VE").proposer_provinces == ("Shandong",)
    finally:
        registry.close()

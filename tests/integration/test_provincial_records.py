"""Provinces on the record beyond proposals (issue 18 item 8): verified emissions a
regulator records directly (four eyes off) keep its jurisdiction on the
``EmissionsVerified`` event (v2), and a rejection keeps the rejecter's on ``Rejected``
(v2), shown in the audit stream and by ``ListProposals``. Events the previous version
wrote (v1: no provinces) still load, as a national regulator's acts. The stored JSON
of the old events is written directly, as the previous version wrote it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.application import EmissionsRow
from registry.application.audit_events import read_events
from registry.application.registry import Registry
from registry.bootstrap import build_registry
from registry.domain.access import Role
from registry.domain.accounts import AccountType, Holder
from registry.domain.obligations import ComplianceObligation
from registry.domain.proposals import Proposal, ProposalStatus
from registry.domain.transactions import Principal
from registry.settings import Settings
from tests.integration.test_provincial_history import stored, v1_proposal

SYSTEM = Principal("system", "tests")
ZHANG = Principal("sd-eeb", "zhang")  # Shandong's department
WANG = Principal("mee", "wang")  # national
TABLE = {
    "reason": "verification report SD-2025-001",
    "rows": [{"account_id": "PWR-SD-0001", "compliance_year": 2025, "verified_emissions": 900}],
}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """Two regulators (ZHANG scoped to Shandong, WANG national) and a Shandong power
    company."""
    app = build_registry(Settings(f"sqlite:///{tmp_path / 'registry.sqlite'}"))
    try:
        app.access.genesis([(Principal("mee", "admin"), Role.ADMIN)], "founding")
        for grant_id, who, provinces in (("g-z", ZHANG, ["Shandong"]), ("g-w", WANG, [])):
            app.access.grant_role(
                SYSTEM, grant_id, who, "regulator", (), "department", provinces=provinces
            )
        app.open_account(
            SYSTEM,
            "PWR-SD-0001",
            AccountType.COMPLIANCE,
            Holder("Jinan Power", "91370000163081422B", "POWER", "Shandong"),
        )
        yield app
    finally:
        app.close()


def verified_events(registry: Registry) -> list[dict[str, object]]:
    """The EmissionsVerified events as the audit stream hands them out (stored JSON)."""
    page = read_events(registry, 0, 100, topics=[ComplianceObligation.EmissionsVerified.TOPIC])
    return [json.loads(e.payload) for e in page.events]


def test_verified_emissions_recorded_directly_keep_the_recorders_provinces(
    registry: Registry,
) -> None:
    """ZHANG records 900 t (Shandong), WANG corrects it to 950 t (national): the audit
    stream shows each figure with the jurisdiction it was recorded in."""
    registry.record_verified_emissions(ZHANG, [EmissionsRow("PWR-SD-0001", 2025, 900, "SD-1")])
    registry.record_verified_emissions(WANG, [EmissionsRow("PWR-SD-0001", 2025, 950, "fix")])
    assert [
        (e["emissions"], e["principal"], e["provinces"]) for e in verified_events(registry)
    ] == [
        (900, str(ZHANG), ["Shandong"]),
        (950, str(WANG), []),
    ]
    assert registry.get_compliance_status("PWR-SD-0001", 2025).verified_emissions == 950


def test_a_rejection_keeps_the_rejecters_provinces(registry: Registry) -> None:
    """WANG proposes, ZHANG rejects in Shandong: the proposal shows Shandong as the
    rejecter's, and listing by Shandong finds it (only the rejection ties it there)."""
    registry.proposals.propose(WANG, "P-VE", "VERIFIED_EMISSIONS", TABLE, "2025")
    rejected = registry.proposals.reject(ZHANG, "mee", "P-VE", "wrong figure").proposal
    assert rejected.status is ProposalStatus.REJECTED
    assert (rejected.proposer_provinces, rejected.rejecter_provinces) == ((), ("Shandong",))
    assert [p.proposal_id for p in registry.proposals.list_proposals(province="shandong")] == [
        "P-VE"
    ]
    assert registry.proposals.list_proposals(province="Jiangsu") == []
    withdrawn = registry.proposals.propose(WANG, "P-VE-2", "VERIFIED_EMISSIONS", TABLE, "again")
    assert withdrawn.proposal.status is ProposalStatus.PENDING
    national = registry.proposals.reject(WANG, "mee", "P-VE-2", "withdrawn").proposal
    assert national.rejecter_provinces == ()


def test_old_emissions_and_rejections_load_as_national_acts(tmp_path: Path) -> None:
    """A v1 ``EmissionsVerified`` (800 t, no provinces) and a v1 ``Rejected`` load in a
    fresh process: the figure counts, neither claims a province, and the aggregates go
    on from them (a new figure of 820 t is recorded with its provinces)."""
    settings = Settings(f"sqlite:///{tmp_path / 'old.sqlite'}")
    registry = build_registry(settings)
    try:
        registry.access.genesis([(Principal("mee", "admin"), Role.ADMIN)], "founding")
        registry.access.grant_role(
            SYSTEM, "g-z", ZHANG, "regulator", (), "department", provinces=["Shandong"]
        )
        registry.open_account(
            SYSTEM,
            "PWR-OLD",
            AccountType.COMPLIANCE,
            Holder("Zibo Power", "91370300163081422C", "POWER", "Shandong"),
        )
        when = registry.access.current().all_grants()[0].at
        proposed, _ = v1_proposal(when)
        obligation = ComplianceObligation.id_for("PWR-OLD", 2025)
        proposal = Proposal.id_for("mee", "P-OLD")
        old_rejected = {"timestamp": when, "by": "mee/regulator-old", "reason": "no", "at": when}
        registry.recorder.insert_events(
            [
                stored(
                    registry,
                    obligation,
                    1,
                    ComplianceObligation.Started.TOPIC,
                    {
                        "timestamp": when,
                        "originator_topic": ComplianceObligation.TOPIC,
                        "account_id": "PWR-OLD",
                        "year": 2025,
                    },
                ),
                stored(
                    registry,
                    obligation,
                    2,
                    ComplianceObligation.EmissionsVerified.TOPIC,
                    {"timestamp": when, "emissions": 800, "reason": "old", "principal": "mee/x"},
                ),
                stored(registry, proposal, 1, Proposal.Proposed.TOPIC, proposed),
                stored(registry, proposal, 2, Proposal.Rejected.TOPIC, old_rejected),
            ]
        )
    finally:
        registry.close()

    reopened = build_registry(settings)  # a fresh process: replayed from the store
    try:
        view = reopened.proposals.get("mee", "P-OLD")
        assert (view.status, view.rejected_by, view.rejecter_provinces) == (
            ProposalStatus.REJECTED,
            "mee/regulator-old",
            (),
        )
        assert reopened.proposals.list_proposals(province="Shandong") == []
        assert reopened.get_compliance_status("PWR-OLD", 2025).verified_emissions == 800
        reopened.record_verified_emissions(ZHANG, [EmissionsRow("PWR-OLD", 2025, 820, "fix")])
        assert reopened.get_compliance_status("PWR-OLD", 2025).verified_emissions == 820
        assert [e.get("provinces") for e in verified_events(reopened)] == [None, ["Shandong"]]
    finally:
        reopened.close()

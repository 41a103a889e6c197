"""A province's detention through proposals, on every backend (PostgreSQL included):
resolved to its registered projects when imposed and recorded, a project of the
province registered later covered in its registration's save, the confirmation
forfeiting every matched project's detained units; conservation after every step
(docs/origins.md)."""

from __future__ import annotations

from typing import Any

import pytest

from registry.application import Registry
from registry.domain.errors import InvalidCommand
from registry.domain.origin_detentions import Origin, OriginDetention
from registry.domain.proposals import ProposalStatus
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.transactions import Principal
from registry.domain.units import UnitClass, UnitSelector, UnitType
from tests.support import REGULATOR, FakeClock, assert_conserved, open_trader, register_project

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
HEBEI = Origin.parse("PROVINCE:Hebei")


def decide(registry: Registry, proposal_id: str, kind: str, payload: dict[str, Any]) -> Any:
    registry.proposals.propose(LI, proposal_id, kind, payload, "for the record")
    return registry.proposals.approve(WANG, "mee", proposal_id).proposal


def ccer(project: str) -> UnitClass:
    return UnitClass(UnitType.CCER, 2024, project)


def of(project: str) -> UnitSelector:
    return UnitSelector(UnitType.CCER, project=project)


def held(registry: Registry, account: str, project: str) -> int:
    return sum(h.total for h in registry.get_holdings(account) if h.unit_class.project == project)


def detention_of(registry: Registry, origin: Origin = HEBEI) -> OriginDetention:
    found = registry.store.find(OriginDetention.id_for_origin(origin), OriginDetention)
    assert found is not None
    return found


@pytest.fixture
def hebei(registry: Registry) -> Registry:
    """HB-1 (100 units) and HB-2 (60) of Hebei, owned by PRJ-HB; YN-1 (50) of Yunnan,
    owned by PRJ-YN. TRD-C holds 40 of HB-1 and 50 of YN-1; TRD-D 30 of HB-2; PRJ-HB
    keeps 60 of HB-1 and 30 of HB-2."""
    register_project(registry, "HB-1", "PRJ-HB", province="Hebei")
    register_project(registry, "HB-2", "PRJ-HB", province="HEBEI")
    register_project(registry, "YN-1", "PRJ-YN", province="Yunnan")
    open_trader(registry, "TRD-C")
    open_trader(registry, "TRD-D")
    for project, quantity in (("HB-1", 100), ("HB-2", 60), ("YN-1", 50)):
        assert registry.issue_units(REGULATOR, f"ISS-{project}", ccer(project), quantity, "").ok
    for txn, source, dest, project, quantity in (
        ("T-1", "PRJ-HB", "TRD-C", "HB-1", 40),
        ("T-2", "PRJ-HB", "TRD-D", "HB-2", 30),
        ("T-3", "PRJ-YN", "TRD-C", "YN-1", 50),
    ):
        assert registry.transfer(REGULATOR, txn, source, dest, of(project), quantity, "").ok
    return registry


def test_a_province_detains_its_projects_and_one_registered_later(
    hebei: Registry, clock: FakeClock
) -> None:
    """Worked example. PROVINCE:Hebei resolves to HB-1 and HB-2 (HEBEI is Hebei): holders
    notified PRJ-HB 60 + 30 = 90, TRD-C 40, TRD-D 30; TRD-C's 50 of YN-1 still move.
    HB-3 (Hebei) registered later is added on the record, its issuance refused; YN-2 is
    not. Confirmed after the 10 days: 90 + 40 + 30 = 160 units forfeited."""
    registry = hebei
    view = decide(
        registry,
        "P-DET",
        "ORIGIN_DETENTION",
        {
            "origin": "PROVINCE:Hebei",
            "reference": "MEE-D-31",
            "reason": "flagged region",
            "rebuttal_days": 10,
        },
    )
    assert view.status is ProposalStatus.EXECUTED, view
    detention = detention_of(registry)
    assert detention.projects == ("HB-1", "HB-2")
    assert {h.account_id: h.quantity for h in detention.notified} == {
        "PRJ-HB": 90,
        "TRD-C": 40,
        "TRD-D": 30,
    }
    assert registry.restrictions.restricted_quantities("TRD-C") == {"CCER/2024/HB-1": (40, 0)}
    assert registry.transfer(REGULATOR, "T-4", "TRD-C", "TRD-D", of("YN-1"), 50, "").ok
    refused = registry.transfer(REGULATOR, "T-5", "TRD-D", "TRD-C", of("HB-2"), 1, "")
    assert refused.refusal_reason == "ORIGIN_DETAINED"
    assert refused.refusal_metadata["origin"] == "PROVINCE:Hebei"
    more = registry.issue_units(REGULATOR, "ISS-HB-2b", ccer("HB-2"), 5, "")
    assert more.refusal_reason == "ORIGIN_DETAINED"
    assert_conserved(registry)

    register_project(registry, "HB-3", "PRJ-HB3", province="Hebei")
    register_project(registry, "YN-2", "PRJ-YN", province="Yunnan")
    detention = detention_of(registry)
    assert detention.projects == ("HB-1", "HB-2", "HB-3")
    matched = detention.history[-1]
    assert matched["change"] == "PROJECT_MATCHED"
    assert matched["reason"] == "HB-3: registered under REG-HB-3: province Hebei"
    index = registry.store.find(RestrictionIndex.id_for(), RestrictionIndex)
    assert index is not None and index.origins["PROVINCE:Hebei"] == ["HB-1", "HB-2", "HB-3"]
    fresh = registry.issue_units(REGULATOR, "ISS-HB-3", ccer("HB-3"), 10, "")
    assert fresh.refusal_reason == "ORIGIN_DETAINED"
    assert fresh.refusal_metadata["origin"] == "PROVINCE:Hebei"
    assert registry.issue_units(REGULATOR, "ISS-YN-2", ccer("YN-2"), 10, "").ok
    # registering HB-3 again is a replay: nothing recorded twice
    version = detention.version
    register_project(registry, "HB-3", "PRJ-HB3", province="Hebei")
    assert detention_of(registry).version == version
    [listed] = [
        r for r in registry.restrictions.list_restrictions() if r.kind == "ORIGIN_DETENTION"
    ]
    assert listed.origin == "PROVINCE:Hebei" and listed.quantity == 160
    assert_conserved(registry)

    clock.advance(11 * 86_400)
    confirmed = decide(
        registry, "P-CONF", "ORIGIN_CONFIRMATION", {"origin": "PROVINCE:Hebei", "reason": "stands"}
    )
    assert confirmed.status is ProposalStatus.EXECUTED, confirmed
    assert detention_of(registry).forfeited == {"PRJ-HB": 90, "TRD-C": 40, "TRD-D": 30}
    for account in ("PRJ-HB", "TRD-C", "TRD-D"):
        assert held(registry, account, "HB-1") == held(registry, account, "HB-2") == 0
    assert held(registry, "CN-CANCELLATION", "HB-1") == 100
    assert held(registry, "CN-CANCELLATION", "HB-2") == 60
    assert held(registry, "TRD-D", "YN-1") == 50  # another province: untouched
    assert registry.issue_units(REGULATOR, "ISS-HB-3b", ccer("HB-3"), 10, "").ok  # over
    assert_conserved(registry)


def test_a_listed_entity_or_a_methodology_matching_nothing_detains_nothing(
    hebei: Registry,
) -> None:
    registry = hebei
    view = decide(
        registry,
        "P-DET-V",
        "ORIGIN_DETENTION",
        {"origin": "VERIFIER:Nobody Certifies", "reference": "MEE-D-32", "reason": "listed"},
    )
    assert view.status is ProposalStatus.EXECUTED, view
    detention = detention_of(registry, Origin.parse("VERIFIER:Nobody Certifies"))
    assert detention.projects == () and detention.notified == ()
    assert registry.transfer(REGULATOR, "T-9", "TRD-C", "TRD-D", of("HB-1"), 1, "").ok
    methodology = decide(
        registry,
        "P-DET-M",
        "ORIGIN_DETENTION",
        {"origin": "METHODOLOGY:CCER-14-001-V01", "reference": "MEE-D-33", "reason": "flawed"},
    )
    assert methodology.status is ProposalStatus.EXECUTED, methodology
    found = detention_of(registry, Origin.parse("METHODOLOGY:CCER-14-001-V01"))
    assert found.projects == ("HB-1", "HB-2", "YN-1")  # register_project's methodology
    assert_conserved(registry)


def test_a_bad_predicate_is_refused_before_anything_is_proposed(hebei: Registry) -> None:
    registry = hebei
    for origin, reason in (
        ("PROVINCE:", "MISSING_ORIGIN"),
        ("REGION:Hebei", "INVALID_ORIGIN_KIND"),
    ):
        with pytest.raises(InvalidCommand) as caught:
            registry.proposals.propose(
                LI,
                f"P-BAD-{reason}",
                "ORIGIN_DETENTION",
                {"origin": origin, "reference": "MEE-D-34", "reason": "x"},
                "for the record",
            )
        assert caught.value.reason == reason and caught.value.metadata["field"] == "payload.origin"
    assert registry.store.find(OriginDetention.id_for_origin(HEBEI), OriginDetention) is None

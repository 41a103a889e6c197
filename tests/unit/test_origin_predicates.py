"""Origins that are predicates over project records (docs/origins.md): a province, a
listed entity (developer, verifier), a methodology; parsed with precise reasons,
resolved to the projects they match, and grown on the record when a matching project
is registered later.

Worked example (the projects below):

| project | province | developer    | verifier | methodology |
|---------|----------|--------------|----------|-------------|
| P-1     | Hebei    | Alpha Energy | V-Cert   | CCER-14-001 |
| P-2     | HEBEI    | Beta Wind    | V-Cert   | CCER-01-001 |
| P-3     | Yunnan   | Alpha Energy | Q-Cert   | CCER-14-001 |

- ``PROVINCE:Hebei`` matches P-1 and P-2 (a province case-insensitively: HEBEI is Hebei);
- ``DEVELOPER:Alpha Energy`` matches P-1 and P-3; ``DEVELOPER:alpha energy`` none
  (an entity exactly, as the registration document spells it);
- ``VERIFIER:V-Cert`` matches P-1 and P-2; ``METHODOLOGY:CCER-14-001`` P-1 and P-3.

Detaining ``PROVINCE:Hebei`` resolves it to (P-1, P-2): units of P-1 and P-2 are
detained, P-3's are not. P-4 (Hebei) registered later is added (``ProjectMatched``):
3 projects; P-5 (Yunnan) is not.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from registry.domain.errors import DetentionNotActive, InvalidCommand, OriginDetained
from registry.domain.origin_detentions import Origin, OriginDetention, OriginKind
from registry.domain.projects import ProjectDetails, ProjectStatus
from registry.domain.restriction_guards import check_detentions
from registry.domain.restriction_index import RestrictionIndex
from registry.domain.units import SerialBlock, UnitClass, UnitType

WHO = "mee/regulator-li"
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def details(province: str, developer: str, verifier: str, methodology: str) -> ProjectDetails:
    return ProjectDetails(
        owner_account="PRJ-1",
        province=province,
        methodology=methodology,
        sector="WIND",
        verifier=verifier,
        developer=developer,
        crediting_start=date(2021, 1, 1),
        crediting_end=date(2030, 12, 31),
    )


PROJECTS = {
    "P-1": details("Hebei", "Alpha Energy", "V-Cert", "CCER-14-001"),
    "P-2": details("HEBEI", "Beta Wind", "V-Cert", "CCER-01-001"),
    "P-3": details("Yunnan", "Alpha Energy", "Q-Cert", "CCER-14-001"),
}


def matched(key: str) -> list[str]:
    origin = Origin.parse(key)
    return [p for p, d in PROJECTS.items() if origin.matches_project(p, d)]


def ccer(project: str) -> UnitClass:
    return UnitClass(UnitType.CCER, 2024, project)


def hebei() -> OriginDetention:
    detention = OriginDetention.start(Origin.parse("PROVINCE:Hebei"))
    detention.detain(reference="MEE-D-9", reason="flagged region", principal=WHO, at=AT)
    detention.resolve(matched("PROVINCE:Hebei"), at=AT)
    return detention


def test_predicates_match_the_worked_example() -> None:
    assert matched("PROVINCE:Hebei") == ["P-1", "P-2"]
    assert matched("PROVINCE:hebei") == ["P-1", "P-2"]
    assert matched("DEVELOPER:Alpha Energy") == ["P-1", "P-3"]
    assert matched("DEVELOPER:alpha energy") == []
    assert matched("VERIFIER:V-Cert") == ["P-1", "P-2"]
    assert matched("METHODOLOGY:CCER-14-001") == ["P-1", "P-3"]
    assert matched("PROJECT:P-3") == ["P-3"]
    # whatever the project's status: units of a suspended project still exist
    query = Origin.parse("PROVINCE:Yunnan").query()
    assert query.matches(PROJECTS["P-3"], ProjectStatus.DEREGISTERED)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("PROVINCE:", "MISSING_ORIGIN"),
        ("DEVELOPER:", "MISSING_ORIGIN"),
        ("PROVINCE: Hebei", "INVALID_ORIGIN"),
        ("VERIFIER:V-Cert ", "INVALID_ORIGIN"),
        ("METHODOLOGY:CCER\n14", "INVALID_ORIGIN"),
        ("METHODOLOGY:" + "M" * 201, "INVALID_ORIGIN"),
        ("REGION:Hebei", "INVALID_ORIGIN_KIND"),
        ("province:Hebei", "INVALID_ORIGIN_KIND"),
    ],
)
def test_bad_predicates_are_refused_precisely(text: str, reason: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        Origin.parse(text, field="origin")
    assert caught.value.reason == reason
    assert caught.value.metadata["field"] == "origin"


def test_a_predicate_has_its_own_key_and_aggregate() -> None:
    origin = Origin.parse("DEVELOPER:Alpha Energy")
    assert origin.kind is OriginKind.DEVELOPER and origin.kind.is_predicate
    assert origin.key == "DEVELOPER:Alpha Energy" and origin.project == ""
    assert origin.projects == ()  # resolved on the detention, not by the key
    assert not origin.matches(ccer("P-1"))
    assert OriginDetention.id_for_origin(origin) != OriginDetention.id_for_origin(
        Origin.parse("VERIFIER:Alpha Energy")
    )
    with pytest.raises(InvalidCommand):
        Origin.parse("PROJECT:P-1").query()


def test_imposition_records_the_resolved_projects_and_detains_their_units() -> None:
    detention = hebei()
    assert detention.projects == ("P-1", "P-2")
    assert detention.detains(ccer("P-1")) and detention.detains(ccer("P-2"))
    assert not detention.detains(ccer("P-3"))
    assert [e["change"] for e in detention.history] == ["DETAINED", "PROJECTS_RESOLVED"]
    assert not detention.resolve(["P-3"], at=AT)  # a retry: resolved already
    assert detention.projects == ("P-1", "P-2")
    blocks = [SerialBlock(ccer("P-2"), 1, 10)]
    with pytest.raises(OriginDetained) as caught:
        check_detentions(blocks, lambda p: [detention] if p in detention.projects else [])
    assert caught.value.metadata["origin"] == "PROVINCE:Hebei"


def test_a_project_registered_later_is_added_on_the_record() -> None:
    detention = hebei()
    p4 = details("Hebei", "Gamma Solar", "V-Cert", "CCER-01-001")
    p5 = details("Yunnan", "Gamma Solar", "V-Cert", "CCER-01-001")
    assert detention.add_project("P-4", p4, reference="REG-P-4", principal=WHO, at=AT)
    assert not detention.add_project("P-4", p4, reference="REG-P-4", principal=WHO, at=AT)
    assert not detention.add_project("P-5", p5, reference="REG-P-5", principal=WHO, at=AT)
    assert detention.projects == ("P-1", "P-2", "P-4") and detention.detains(ccer("P-4"))
    last = detention.history[-1]
    assert last["change"] == "PROJECT_MATCHED"
    assert last["reason"] == "P-4: registered under REG-P-4: province Hebei"
    events = detention.collect_events()
    assert [type(e).__name__ for e in events][-1] == "ProjectMatched"


def test_nothing_is_added_once_the_detention_ends_or_to_a_project_origin() -> None:
    detention = hebei()
    detention.clear(evidence="EV-1", reason="cleared on review", principal=WHO, at=AT)
    p4 = details("Hebei", "Gamma Solar", "V-Cert", "CCER-01-001")
    assert not detention.add_project("P-4", p4, reference="REG-P-4", principal=WHO, at=AT)
    assert detention.projects == ("P-1", "P-2")
    with pytest.raises(DetentionNotActive):
        detention.resolve(["P-4"], at=AT)
    project = OriginDetention.start("P-1")
    project.detain(reference="MEE-D-1", reason="flagged", principal=WHO, at=AT)
    assert not project.resolve(["P-2"], at=AT)
    assert not project.add_project("P-1", PROJECTS["P-1"], reference="R", principal=WHO, at=AT)
    assert project.projects == ("P-1",)


def test_detained_again_the_predicate_is_resolved_again() -> None:
    detention = hebei()
    detention.clear(evidence="EV-1", reason="cleared on review", principal=WHO, at=AT)
    detention.detain(reference="MEE-D-10", reason="flagged again", principal=WHO, at=AT)
    assert detention.projects == ()
    assert detention.resolve(["P-1", "P-2", "P-4"], at=AT)
    assert detention.projects == ("P-1", "P-2", "P-4")


def test_the_index_follows_the_resolved_projects() -> None:
    index = RestrictionIndex.start()
    origin = Origin.parse("PROVINCE:Hebei")
    index.index_origin(origin, True, ["P-2", "P-1"])
    assert index.origins == {"PROVINCE:Hebei": ["P-1", "P-2"]}
    assert index.detains("P-1") and not index.detains("P-4")
    assert index.predicate_origins() == [origin]
    index.index_origin(origin, True, ["P-1", "P-2"])  # unchanged: no event
    index.index_origin(origin, True, ["P-1", "P-2", "P-4"])
    assert index.detains("P-4")
    assert index.detention_ids("P-4") == [OriginDetention.id_for_origin(origin)]
    index.index_origin(origin, False)
    assert index.origins == {} and not index.detains("P-1")
    names = [type(e).__name__ for e in index.collect_events()]
    assert names == ["Started", "OriginIndexed", "OriginIndexed", "OriginIndexed"]

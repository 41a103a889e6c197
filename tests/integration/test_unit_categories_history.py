"""Events written before unit lines still load from a real store: an
``EmissionsVerified`` of class version 1 (no lines) reads as one whole-company line and
judges the obligation as before; a ``RulesChanged`` of class version 2 (no unit relief)
reads as rules without relief per category, and setting the same rules again is
recognised as no change."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from registry.application import EmissionsRow
from registry.application.registry import Registry
from registry.bootstrap import build_registry
from registry.domain.obligations import ComplianceObligation
from registry.domain.rules import ComplianceRules, ComplianceYear, UnitLine
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from tests.support import REGULATOR, open_company

ACCOUNT = "PWR-UC-0001"


def stored(
    registry: Registry, originator: UUID, version: int, topic: str, state: dict[str, Any]
) -> StoredEvent:
    """An event exactly as an earlier version stored it (its state, its class version)."""
    return StoredEvent(
        originator_id=originator,
        originator_version=version,
        topic=topic,
        state=registry.mapper.transcoder.encode({"timestamp": registry.clock(), **state}),
    )


def test_previous_versions_events_load_and_judge_as_before(tmp_path: Path) -> None:
    """Rules: obligation capped at allocation + 20 % (a v2 RulesChanged, no unit relief).
    Allocated 70,000; the v1 figure 100,000 t: obligation min(100,000, 70,000 + 20,000)
    = 90,000, as the previous version judged it. The same figure sent again without
    lines is UNCHANGED; sent with a gas/coal breakdown it is a correction, and under
    rules with GAS 0 (set after the upgrade) the obligation becomes 60,000 + 25,000 =
    85,000 (company cap 90,000 does not bind)."""
    settings = Settings(f"sqlite:///{tmp_path / 'old.sqlite'}")
    registry = build_registry(settings)
    try:
        open_company(registry, ACCOUNT, "POWER")
        registry.issue_units(REGULATOR, "ISS-1", UnitClass(UnitType.CEA, 2021), 70_000, "")
        registry.allocate(
            REGULATOR, "AL-1", ACCOUNT, UnitSelector(UnitType.CEA, 2021), 70_000,
            "2021 allocation", source="CN-ISSUANCE",
        )  # fmt: skip
        registry.record_verified_emissions(
            REGULATOR, [EmissionsRow(ACCOUNT, 2021, 99_999, "first report")]
        )
        registry.set_compliance_rules(REGULATOR, 2021, "*", ComplianceRules(), "default")
        year = registry.get_compliance_rules(2021)
        obligation = registry.store.find(
            ComplianceObligation.id_for(ACCOUNT, 2021), ComplianceObligation
        )
        assert obligation is not None
        old_rules = {
            k: v
            for k, v in ComplianceRules(obligation_cap_bps=2_000).as_dict().items()
            if k != "unit_obligation_cap_bps"
        }
        registry.recorder.insert_events(
            [
                stored(
                    registry,
                    ComplianceObligation.id_for(ACCOUNT, 2021),
                    obligation.version + 1,
                    ComplianceObligation.EmissionsVerified.TOPIC,
                    {"emissions": 100_000, "reason": "v1 correction", "principal": "mee/old"},
                ),
                stored(
                    registry,
                    ComplianceYear.id_for(2021),
                    year.version + 1,
                    ComplianceYear.RulesChanged.TOPIC,
                    {
                        "class_version": 2,
                        "sector": "POWER",
                        "rules": old_rules,
                        "principal": "mee/old",
                        "reason": "set before v3",
                    },
                ),
            ]
        )
    finally:
        registry.close()

    reopened = build_registry(settings)  # a fresh process: replayed from the store
    try:
        power = reopened.get_compliance_rules(2021).rules["POWER"]
        assert power.obligation_cap_bps == 2_000 and power.unit_obligation_cap_bps == {}
        unchanged = reopened.set_compliance_rules(
            REGULATOR, 2021, "POWER", ComplianceRules(obligation_cap_bps=2_000), "same again"
        )
        assert unchanged.position is None  # the upcast rules equal the same rules set now

        status = reopened.get_compliance_status(ACCOUNT, 2021)
        assert (status.verified_emissions, status.allocated, status.obligation) == (
            100_000,
            70_000,
            90_000,
        )
        assert status.unit_lines == ()
        again = reopened.record_verified_emissions(
            REGULATOR, [EmissionsRow(ACCOUNT, 2021, 100_000, "same figure")]
        )
        assert again.results[0].status.value == "UNCHANGED"

        reopened.set_compliance_rules(
            REGULATOR,
            2021,
            "POWER",
            ComplianceRules(obligation_cap_bps=2_000, unit_obligation_cap_bps={"GAS": 0}),
            "gas relief",
        )
        lines = (
            UnitLine("COAL_CONVENTIONAL_300MW_PLUS", "C1", 60_000, 45_000),
            UnitLine("GAS", "G1", 40_000, 25_000),
        )
        split = reopened.record_verified_emissions(
            REGULATOR, [EmissionsRow(ACCOUNT, 2021, 100_000, "by unit", lines)]
        )
        assert split.results[0].status.value == "RECORDED"
        status = reopened.get_compliance_status(ACCOUNT, 2021)
        assert status.obligation == 85_000
        assert [(d.line.unit_id, d.due) for d in status.unit_lines] == [
            ("C1", 60_000),
            ("G1", 25_000),
        ]
    finally:
        reopened.close()

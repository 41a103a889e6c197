"""Rule events written before rule vocabulary v2 still load: a version-1
``ComplianceYear.RulesChanged`` (no bases) is upcast to what it meant when written (CCER
and advance use as shares of verified emissions, borrowing open to all, no carry-over
limit), and a surrender is judged by it as the previous version judged it."""

from __future__ import annotations

from pathlib import Path

from eventsourcing.persistence import StoredEvent

from registry.application import EmissionsRow
from registry.application.registry import Registry
from registry.bootstrap import build_registry
from registry.domain.rules import ComplianceRules, ComplianceYear
from registry.domain.units import UnitClass, UnitSelector, UnitType
from registry.settings import Settings
from registry.v1 import administration_service_pb2 as admin_pb
from services.convert import rules_to_proto
from tests.support import REGULATOR, open_company, register_project


def stored_v1_rules(registry: Registry, version: int, timestamp: object) -> StoredEvent:
    """A RulesChanged exactly as the previous version stored it: no ``class_version``,
    rules without ``ccer_cap_base``, ``advance_use_base`` or any carry-over field."""
    state = {
        "timestamp": timestamp,
        "sector": "POWER",
        "rules": {
            "ccer_cap_bps": 500,
            "cea_min_vintage": None,
            "advance_use_bps": 1_000,
            "surrender_deadline": "",
            "obligation_cap_bps": 2_000,
        },
        "principal": "mee/old",
        "reason": "set before v2",
    }
    return StoredEvent(
        originator_id=ComplianceYear.id_for(2025),
        originator_version=version,
        topic=ComplianceYear.RulesChanged.TOPIC,
        state=registry.mapper.transcoder.encode(state),
    )


def test_a_version_1_rule_change_loads_and_judges_on_verified_emissions(tmp_path: Path) -> None:
    """Verified 100,000 t, allocated 70,000 t, obligation capped at 70,000 + 20,000 =
    90,000 t. Under the v1 rule the CCER cap stays 5 % of verified = 5,000 t (on the
    obligation it would be 4,500), and borrowing 10 % of verified = 10,000 t."""
    settings = Settings(f"sqlite:///{tmp_path / 'old.sqlite'}")
    registry = build_registry(settings)
    try:
        registry.set_compliance_rules(REGULATOR, 2025, "*", ComplianceRules(), "v2 default")
        year = registry.get_compliance_rules(2025)
        when = registry.clock()
        registry.recorder.insert_events([stored_v1_rules(registry, year.version + 1, when)])
    finally:
        registry.close()

    reopened = build_registry(settings)  # a fresh process: replayed from the store
    try:
        view = reopened.get_compliance_rules(2025)
        power = view.rules["POWER"]
        assert (power.ccer_cap_base, power.advance_use_base, power.carry_over) == (
            "VERIFIED_EMISSIONS",
            "VERIFIED_EMISSIONS",
            "UNLIMITED",
        )
        assert view.rules["*"].ccer_cap_base == "OBLIGATION"
        assert rules_to_proto(power).ccer_cap_base == (admin_pb.CCER_CAP_BASE_VERIFIED_EMISSIONS)

        open_company(reopened, "PWR-SD-0001", "POWER")
        reopened.issue_units(REGULATOR, "ISS-1", UnitClass(UnitType.CEA, 2025), 70_000, "")
        reopened.issue_units(REGULATOR, "ISS-2", UnitClass(UnitType.CEA, 2026), 20_000, "")
        owner = register_project(reopened, "P-1")
        reopened.issue_units(REGULATOR, "ISS-3", UnitClass(UnitType.CCER, 2024, "P-1"), 6_000, "")
        reopened.allocate(
            REGULATOR, "AL-1", "PWR-SD-0001", UnitSelector(UnitType.CEA, 2025), 70_000,
            "2025 allocation", source="CN-ISSUANCE",
        )  # fmt: skip
        for txn, source, selector, quantity in (
            ("V26", "CN-ISSUANCE", UnitSelector(UnitType.CEA, 2026), 20_000),
            ("OFF", owner, UnitSelector(UnitType.CCER), 6_000),
        ):
            reopened.transfer(REGULATOR, txn, source, "PWR-SD-0001", selector, quantity, "")
        reopened.record_verified_emissions(
            REGULATOR, [EmissionsRow("PWR-SD-0001", 2025, 100_000, "report")]
        )
        status = reopened.get_compliance_status("PWR-SD-0001", 2025)
        assert (status.obligation, status.ccer_cap, status.advance_use_limit) == (
            90_000,
            5_000,
            10_000,
        )

        def surrender(txn: str, selector: UnitSelector, quantity: int) -> str:
            result = reopened.surrender(
                REGULATOR, txn, "PWR-SD-0001", selector, quantity, 2025, "compliance"
            )
            return result.refusal_reason

        assert surrender("S-1", UnitSelector(UnitType.CCER), 5_001) == "CCER_CAP_EXCEEDED"
        assert surrender("S-2", UnitSelector(UnitType.CCER), 5_000) == ""
        assert surrender("S-3", UnitSelector(UnitType.CEA, 2026), 10_001) == (
            "ADVANCE_USE_LIMIT_EXCEEDED"
        )
        assert surrender("S-4", UnitSelector(UnitType.CEA, 2026), 10_000) == ""
        # the aggregate goes on from the upcast event: a v2 change over it
        reopened.set_compliance_rules(
            REGULATOR, 2025, "POWER", ComplianceRules(obligation_cap_bps=2_000), "Art. 29"
        )
        assert reopened.get_compliance_status("PWR-SD-0001", 2025).ccer_cap == 4_500
    finally:
        reopened.close()

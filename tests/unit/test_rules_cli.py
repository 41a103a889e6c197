"""`registry rules show` prints every rule of every sector, its value and its source."""

from __future__ import annotations

import pytest

from registry.cli.regulator import _print_year
from registry.domain.rule_defaults import shipped_rules
from registry.v1 import administration_service_pb2 as admin_pb
from services.convert import rules_from_proto, rules_to_proto


def test_a_year_without_rules_shows_the_shipped_ones_with_their_sources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_year(admin_pb.GetComplianceRulesResponse(compliance_year=2022))
    out = capsys.readouterr().out
    assert "set-shipped 2022" in out
    assert "advance_use_min_gap_bps   1000" in out
    assert "gap rate of 10 % or more" in out
    assert "Art. 29" in out and "alloc+20%" in out


def test_a_rule_set_differently_is_shown_as_a_regulator_s(
    capsys: pytest.CaptureFixture[str],
) -> None:
    power = shipped_rules(2025)["POWER"].rules
    message = rules_to_proto(power)
    message.carry_over_base_tonnes = 20_000
    assert rules_from_proto(message).carry_over_base_tonnes == 20_000
    assert rules_from_proto(rules_to_proto(power)) == power  # the API keeps every field
    view = admin_pb.GetComplianceRulesResponse(
        compliance_year=2025,
        version=2,
        rules=[admin_pb.SectorRules(sector="POWER", rules=message)],
    )
    _print_year(view)
    out = capsys.readouterr().out
    assert "carry_over_base_tonnes    20000               set by a regulator" in out
    assert "1.5 x net sales" in out and "NET_SALES" in out


def test_an_unspecified_base_is_the_default_and_an_unknown_one_is_refused_by_name() -> None:
    assert rules_from_proto(admin_pb.ComplianceRules()).ccer_cap_base == "OBLIGATION"
    odd = rules_from_proto(admin_pb.ComplianceRules(ccer_cap_base=99))  # type: ignore[arg-type]
    assert [v.field for v in odd.violations(2025)] == ["rules.ccer_cap_base"]

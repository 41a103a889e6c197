"""Unit lines from a regulator's CSV file (``registry import emissions``): the optional
``unit_lines`` column, bad lines named by file line, and the same lines carried by the
RecordVerifiedEmissions request and by a four-eyes ``VERIFIED_EMISSIONS`` proposal
that a second regulator approves (in memory: no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.cli.bulk import read_csv
from registry.cli.imports import EMISSIONS_SCHEMA, emissions_payload, emissions_request
from registry.domain.errors import InvalidCommand
from registry.domain.proposals import ProposalStatus
from registry.domain.rules import ComplianceRules, UnitLine
from registry.domain.transactions import Principal
from tests.support import REGULATOR, open_company, registry_on

LI = Principal("mee", "regulator-li")
WANG = Principal("mee", "regulator-wang")
COAL = "COAL_CONVENTIONAL_300MW_PLUS"
HEADER = "account_id,compliance_year,verified_emissions,reason,unit_lines\n"
GOOD = (
    HEADER
    + f"PWR-0001,2025,130000,report V-1,{COAL}:C1:100000:90000;GAS:G1:30000:25000\n"
    + "PWR-0002,2025,5000,report V-2,\n"
)


def test_the_unit_lines_column_is_read_and_sent() -> None:
    parsed = read_csv(GOOD.encode(), EMISSIONS_SCHEMA)
    assert parsed.ok, parsed.violations
    first, second = parsed.rows
    assert first.unit_lines == (
        UnitLine(COAL, "C1", 100_000, 90_000),
        UnitLine("GAS", "G1", 30_000, 25_000),
    )
    assert second.unit_lines == ()
    request = emissions_request(parsed.rows)
    assert [(u.unit_category, u.allocated) for u in request.rows[0].unit_lines] == [
        (COAL, 90_000),
        ("GAS", 25_000),
    ]
    assert not request.rows[1].unit_lines
    payload = emissions_payload(parsed.rows)
    rows = payload["rows"]
    assert isinstance(rows, list)
    assert rows[0]["unit_lines"][1] == {
        "unit_category": "GAS",
        "unit_id": "G1",
        "verified_emissions": 30_000,
        "allocated": 25_000,
    }
    assert "unit_lines" not in rows[1]


def test_bad_unit_lines_are_named_by_file_line() -> None:
    """Line 2: a line that is not four cells; line 3: lines adding up to 90 t of a
    100 t row; line 4: an unknown category."""
    bad = (
        HEADER
        + "PWR-0001,2025,100,r,GAS:G1:100\n"
        + f"PWR-0002,2025,100,r,{COAL}:C1:60:50;GAS:G1:30:20\n"
        + "PWR-0003,2025,100,r,OIL::100:0\n"
    )
    parsed = read_csv(bad.encode(), EMISSIONS_SCHEMA)
    assert not parsed.ok
    assert [(v.field, v.reason) for v in parsed.violations] == [
        ("rows[0].unit_lines", "INVALID_UNIT_LINE"),
        ("rows[1].unit_lines", "UNIT_LINES_MISMATCH"),
        ("rows[2].unit_lines", "INVALID_UNIT_CATEGORY"),
    ]
    assert "line 3" in parsed.violations[1].description


def test_a_proposed_table_carries_the_lines_to_the_obligation(tmp_path: Path) -> None:
    """Approved, the file's first row is judged per unit under GAS 0 and the 20 %
    company cap: dues 100,000 + min(30,000, 25,000) = 125,000; no allocation in the
    ledger, so the company cap is 0 + 20 % x 130,000 = 26,000 and binds: 26,000."""
    parsed = read_csv(GOOD.encode(), EMISSIONS_SCHEMA)
    with registry_on("memory", tmp_path) as registry:
        open_company(registry, "PWR-0001")
        open_company(registry, "PWR-0002")
        registry.set_compliance_rules(
            REGULATOR,
            2025,
            "POWER",
            ComplianceRules(obligation_cap_bps=2_000, unit_obligation_cap_bps={"GAS": 0}),
            "relief",
        )
        payload = emissions_payload(parsed.rows)
        rows = payload["rows"]
        assert isinstance(rows, list)
        wrong = {**payload, "rows": [{**rows[0], "verified_emissions": 1}]}
        with pytest.raises(InvalidCommand) as refused:  # lines adding up to another figure
            registry.proposals.propose(LI, "P-BAD", "VERIFIED_EMISSIONS", wrong, "typo")
        assert (refused.value.reason, refused.value.metadata["field"]) == (
            "INVALID_PAYLOAD",
            "payload.rows[0]",
        )
        registry.proposals.propose(LI, "P-VE", "VERIFIED_EMISSIONS", payload, "2025 figures")
        done = registry.proposals.approve(WANG, "mee", "P-VE").proposal
        assert done.status is ProposalStatus.EXECUTED, done.result
        status = registry.get_compliance_status("PWR-0001", 2025)
        assert [d.due for d in status.unit_lines] == [100_000, 25_000]
        assert status.obligation == 26_000
        assert registry.get_compliance_status("PWR-0002", 2025).unit_lines == ()

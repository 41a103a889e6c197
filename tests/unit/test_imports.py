"""The pure pieces of `registry import`: the two file schemas and mapping problems (the
file's own, and the server's ``rows[i].column``) back to file lines."""

from __future__ import annotations

from registry.cli.bulk import read_csv
from registry.cli.imports import (
    ALLOCATIONS_SCHEMA,
    EMISSIONS_SCHEMA,
    MAX_EMISSIONS_ROWS,
    AllocationLine,
    EmissionsLine,
    allocation_request,
    emissions_request,
)
from registry.cli.problems import Problem, file_problems, server_problems
from registry.domain.errors import Violation
from registry.v1 import common_pb2 as common

EMISSIONS = "account_id,compliance_year,verified_emissions,reason\n"
ALLOCATIONS = "transaction_id,account_id,unit_type,vintage,quantity,source,reason\n"


def test_a_good_emissions_file_becomes_one_request() -> None:
    parsed = read_csv(
        EMISSIONS + "PWR-0001,2025,120000,report\n\nCEM-0042,2025,0,report\n", EMISSIONS_SCHEMA
    )
    assert parsed.ok and parsed.lines == (2, 4)
    assert parsed.rows[1] == EmissionsLine("CEM-0042", 2025, 0, "report")
    request = emissions_request(parsed.rows)
    assert [(r.account_id, r.verified_emissions) for r in request.rows] == [
        ("PWR-0001", 120_000),
        ("CEM-0042", 0),
    ]


def test_every_bad_emissions_row_is_named_by_line_and_column() -> None:
    parsed = read_csv(
        EMISSIONS + "PWR-0001,2101,1e6,report\n"
        "pwr,2025,-1,report\n"
        "PWR-0002,2025,5,report\n"
        "PWR-0002,2025,6,report\n",
        EMISSIONS_SCHEMA,
    )
    assert not parsed.ok
    assert [(p.line, p.column, p.reason) for p in file_problems(parsed.violations)] == [
        (2, "compliance_year", "INVALID_COMPLIANCE_YEAR"),
        (2, "verified_emissions", "INVALID_EMISSIONS"),
        (3, "account_id", "INVALID_ACCOUNT_ID"),
        (3, "verified_emissions", "INVALID_EMISSIONS"),
        (5, "account_id", "DUPLICATE_ROW"),
    ]


def test_an_emissions_file_over_one_call_is_refused_whole() -> None:
    rows = "".join(f"PWR-{i:05d},2025,1,r\n" for i in range(MAX_EMISSIONS_ROWS + 1))
    parsed = read_csv(EMISSIONS + rows, EMISSIONS_SCHEMA)
    [problem] = file_problems(parsed.violations)
    assert problem == Problem(
        None,
        "",
        "BATCH_TOO_LARGE",
        f"{MAX_EMISSIONS_ROWS + 1} rows; at most {MAX_EMISSIONS_ROWS} per file",
    )


def test_allocation_source_and_vintage_are_optional() -> None:
    parsed = read_csv(
        "transaction_id,account_id,unit_type,quantity,reason\n"
        "PRE-1,PWR-0001,CEA,100,pre-allocation\n",
        ALLOCATIONS_SCHEMA,
    )
    assert parsed.rows == (
        AllocationLine("PRE-1", "PWR-0001", "CEA", None, 100, "", "pre-allocation"),
    )
    [row] = allocation_request(parsed.rows).rows
    assert row.unit_type == common.UNIT_TYPE_CEA and not row.HasField("vintage")
    assert row.source_account == ""
    [row] = allocation_request(
        [AllocationLine("P", "PWR-0001", "CEA", 2025, 1, "CN-ISSUANCE", "r")]
    ).rows
    assert row.vintage == 2025 and row.source_account == "CN-ISSUANCE"


def test_bad_allocation_rows_and_header() -> None:
    parsed = read_csv(
        ALLOCATIONS + "PRE 1,PWR-0001,EUA,1999,0,,r\nPRE-2,PWR-0001,CEA,,5,,r\n"
        "PRE-2,PWR-0001,CEA,,5,,r\n",
        ALLOCATIONS_SCHEMA,
    )
    assert [(p.line, p.column, p.reason) for p in file_problems(parsed.violations)] == [
        (2, "transaction_id", "INVALID_ID"),
        (2, "unit_type", "UNKNOWN_UNIT_TYPE"),
        (2, "vintage", "INVALID_VINTAGE"),
        (2, "quantity", "INVALID_QUANTITY"),
        (4, "transaction_id", "DUPLICATE_ROW"),
    ]
    header = read_csv(
        "transaction_id,account,unit_type,quantity,reason\nX,Y,CEA,1,r\n", ALLOCATIONS_SCHEMA
    )
    assert [(p.line, p.column, p.reason) for p in file_problems(header.violations)] == [
        (1, "header", "UNKNOWN_COLUMN"),
        (1, "account_id", "MISSING_COLUMN"),
    ]


def test_a_return_row_is_marked_in_the_request_and_the_proposal_payload() -> None:
    parsed = read_csv(
        ALLOCATIONS.rstrip() + ",kind\n"
        "TU-1,PWR-0001,CEA,2025,10,,true-up,ALLOCATION_RETURN\n"
        "TU-2,PWR-0002,CEA,2025,5,CN-ISSUANCE,true-up,\n"
        "TU-3,PWR-0003,CEA,2025,5,,true-up,RETURN\n",
        ALLOCATIONS_SCHEMA,
    )
    assert [(p.line, p.column, p.reason) for p in file_problems(parsed.violations)] == [
        (4, "kind", "INVALID_ALLOCATION_KIND")
    ]
    returned = AllocationLine(
        "TU-1", "PWR-0001", "CEA", 2025, 10, "", "true-up", "ALLOCATION_RETURN"
    )
    given = AllocationLine("TU-2", "PWR-0002", "CEA", 2025, 5, "CN-ISSUANCE", "true-up")
    assert [r.allocation_return for r in allocation_request([returned, given]).rows] == [
        True,
        False,
    ]
    assert returned.payload_row() == {
        "transaction_id": "TU-1",
        "account_id": "PWR-0001",
        "unit_type": "CEA",
        "quantity": 10,
        "vintage": 2025,
        "reason": "true-up",
        "return": True,
    }
    assert given.payload_row()["source"] == "CN-ISSUANCE" and "return" not in given.payload_row()


def test_server_rows_are_mapped_to_file_lines_from_the_call_offset() -> None:
    lines = (2, 3, 5, 8)
    problems = server_problems(
        [
            ("rows[1].account_id", "UNKNOWN_ACCOUNT", "no account X"),
            ("rows", "BATCH_TOO_LARGE", "too many"),
        ],
        lines,
        offset=2,
    )
    assert problems == [
        Problem(8, "account_id", "UNKNOWN_ACCOUNT", "no account X"),
        Problem(None, "rows", "BATCH_TOO_LARGE", "too many"),
    ]
    assert str(problems[0]) == "line 8, account_id: UNKNOWN_ACCOUNT: no account X"


def test_file_problems_without_a_line() -> None:
    [problem] = file_problems([Violation("file", "INVALID_ENCODING", "the file is UTF-16")])
    assert str(problem) == "file: INVALID_ENCODING: the file is UTF-16"

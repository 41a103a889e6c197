"""CSV uploads are checked whole: every bad row is named, nothing is half-read. No I/O
beyond tmp_path files."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from registry.cli.bulk import Column, ParsedFile, Schema, parse_decimal, parse_int, read_csv
from registry.domain.accounts import check_account_id
from registry.domain.errors import InvalidCommand, InvalidFile, RowsInvalid, Violation
from registry.domain.obligations import check_year


@dataclass(frozen=True)
class Emissions:
    account_id: str
    year: int
    quantity: int
    note: str


def _quantity(text: str) -> int:
    value = parse_int(text, reason="INVALID_EMISSIONS", what="quantity")
    if value < 0:
        raise InvalidCommand(f"quantity {value} is negative", reason="INVALID_EMISSIONS")
    return value


def _emissions(values: Mapping[str, Any]) -> Emissions:
    if values["note"] == "idle" and values["quantity"]:
        raise InvalidCommand(
            "an idle plant emits nothing", reason="IDLE_WITH_EMISSIONS", field="quantity"
        )
    return Emissions(**values)


SCHEMA = Schema(
    columns=(
        Column("account_id", check_account_id),
        Column(
            "year",
            lambda t: check_year(parse_int(t, reason="INVALID_COMPLIANCE_YEAR", what="year")),
        ),
        Column("quantity", _quantity),
        Column("note", str, required=False, default=""),
    ),
    make=_emissions,
    key=("account_id", "year"),
    max_rows=6,
)

GOOD = (
    "account_id,year,quantity,note\n"
    "PWR-0001,2025,9000000,\n"
    "PWR-0002,2025,120,idle plant? no\n"
    "CEM-0003,2025,0,idle\n"
)


def read(source: str | bytes) -> ParsedFile[Emissions]:
    return read_csv(source, SCHEMA)


def reasons(parsed: ParsedFile[Any]) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in parsed.violations]


# == good files ==================================================================


def test_a_good_file_gives_every_record_with_its_line() -> None:
    parsed = read(GOOD)
    assert parsed.ok and parsed.error is None
    assert parsed.check() == (
        Emissions("PWR-0001", 2025, 9_000_000, ""),
        Emissions("PWR-0002", 2025, 120, "idle plant? no"),
        Emissions("CEM-0003", 2025, 0, "idle"),
    )
    assert parsed.lines == (2, 3, 4)
    assert parsed.rows_total == 3
    assert len(parsed.digest) == 64


def test_utf8_bom_crlf_column_order_whitespace_blank_lines_and_absent_optional_column(
    tmp_path: Path,
) -> None:
    text = (
        "\r\n"
        "quantity , year,account_id\r\n"
        " 9000000 ,2025, PWR-0001\r\n"
        ",,\r\n"
        "\r\n"
        "120,2025,PWR-0002\r\n"
    )
    path = tmp_path / "emissions.csv"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    parsed = read_csv(path, SCHEMA)
    assert parsed.check() == (
        Emissions("PWR-0001", 2025, 9_000_000, ""),
        Emissions("PWR-0002", 2025, 120, ""),
    )
    assert parsed.lines == (3, 6)
    assert read(text).check() == parsed.rows
    assert read("\ufeff" + text).check() == parsed.rows


def test_anything_with_read_bytes_is_a_source() -> None:
    class Resource:
        def read_bytes(self) -> bytes:
            return GOOD.encode()

    assert read_csv(Resource(), SCHEMA).check() == read(GOOD).check()


def test_a_quoted_cell_may_hold_commas_and_newlines_and_lines_still_count() -> None:
    parsed = read(
        "account_id,year,quantity,note\n"
        'PWR-0001,2025,1,"line one\nline two, still the note"\n'
        "PWR-0002,2025,x,\n"
    )
    assert reasons(parsed) == [("rows[1].quantity", "INVALID_EMISSIONS")]
    assert parsed.violations[0].description.startswith("line 4: ")


def test_unicode_text_is_kept() -> None:
    parsed = read("account_id,year,quantity,note\nPWR-0001,2025,1,华能 unit 2\n")
    assert parsed.check()[0].note == "华能 unit 2"


# == one bad row, many bad rows ==================================================


def test_one_bad_row_among_good_ones_is_named_exactly() -> None:
    parsed = read(
        "account_id,year,quantity\nPWR-0001,2025,100\nPWR-0002,2025,-5\nPWR-0003,2025,300\n"
    )
    assert parsed.violations == (
        Violation("rows[1].quantity", "INVALID_EMISSIONS", "line 3: quantity -5 is negative"),
    )
    assert parsed.rows == () and parsed.digest == ""
    with pytest.raises(RowsInvalid) as raised:
        parsed.check()
    assert type(raised.value) is RowsInvalid
    assert raised.value.reason == "INVALID_ROWS"
    assert raised.value.violations == parsed.violations
    assert "1 of 3 rows" in raised.value.message


def test_many_bad_rows_are_all_reported_in_file_order() -> None:
    parsed = read(
        "account_id,year,quantity,note\n"
        "pwr 1,2025,100,\n"  # rows[0] bad id
        "PWR-0002,1999,1.5,\n"  # rows[1] bad year and quantity
        "PWR-0003,2025,100,\n"  # rows[2] fine
        ",,,\n"  # blank: skipped, not a row
        "PWR-0004,2025\n"  # rows[3] too few cells
        "PWR-0003,2025,7,\n"  # rows[4] duplicate of rows[2]
        "PWR-0005,2025,5,idle\n"
    )  # rows[5] cross-column rule
    assert reasons(parsed) == [
        ("rows[0].account_id", "INVALID_ACCOUNT_ID"),
        ("rows[1].year", "INVALID_COMPLIANCE_YEAR"),
        ("rows[1].quantity", "INVALID_EMISSIONS"),
        ("rows[3]", "WRONG_CELL_COUNT"),
        ("rows[4].account_id", "DUPLICATE_ROW"),
        ("rows[5].quantity", "IDLE_WITH_EMISSIONS"),
    ]
    lines = [v.description.split(":")[0] for v in parsed.violations]
    assert lines == ["line 2", "line 3", "line 3", "line 6", "line 7", "line 8"]
    assert "rows[2] (line 4)" in parsed.violations[4].description
    error = parsed.error
    assert isinstance(error, RowsInvalid) and "5 of 6 rows" in error.message


def test_an_empty_required_cell_is_missing_an_empty_optional_one_takes_the_default() -> None:
    parsed = read("account_id,year,quantity,note\nPWR-0001,,5,\n")
    assert reasons(parsed) == [("rows[0].year", "MISSING_FIELD")]


def test_a_duplicate_key_is_found_on_parsed_values() -> None:
    parsed = read("account_id,year,quantity\nPWR-0001,2025,1\nPWR-0001, +2025 ,2\n")
    assert reasons(parsed) == [("rows[1].account_id", "DUPLICATE_ROW")]


# == files rejected whole ========================================================


@pytest.mark.parametrize(
    ("content", "field", "reason"),
    [
        (
            "account_id,year,quantity\nPWR-0001,2025,1\n".encode("gbk") + "华能".encode("gbk"),
            "file",
            "INVALID_ENCODING",
        ),
        ("account_id,year,quantity\n".encode("utf-16"), "file", "INVALID_ENCODING"),
        (b"", "file", "EMPTY_FILE"),
        (codecs.BOM_UTF8 + b"\n \n,,\n", "file", "EMPTY_FILE"),
        (b"account_id,year,quantity\n\n", "rows", "EMPTY_BATCH"),
        (b'account_id,year,quantity\nPWR-0001,2025,"1\n', "rows[0]", "MALFORMED_CSV"),
        (b'account_id,"year"x,quantity\n', "header", "MALFORMED_CSV"),
        (b"account_id,year,quantity,colour\nPWR-0001,2025,1,red\n", "header[3]", "UNKNOWN_COLUMN"),
        (b"account_id,year,quantity,\nPWR-0001,2025,1,\n", "header[3]", "UNKNOWN_COLUMN"),
        (b"account_id,year,quantity,year\n", "header[3]", "DUPLICATE_COLUMN"),
        (b"account_id,quantity\nPWR-0001,1\n", "header.year", "MISSING_COLUMN"),
        (b"account_id,year,quantity\n" + b"PWR-0001,2025,1\n" * 7, "rows", "BATCH_TOO_LARGE"),
    ],
)
def test_a_file_that_cannot_be_read_as_rows_is_rejected_whole(
    content: bytes, field: str, reason: str
) -> None:
    parsed = read(content)
    assert reasons(parsed) == [(field, reason)]
    assert parsed.rows == () and parsed.digest == ""
    with pytest.raises(InvalidFile) as raised:
        parsed.check()
    assert raised.value.reason == "INVALID_FILE"
    assert raised.value.violations == parsed.violations


def test_the_encoding_error_names_the_line() -> None:
    content = b"account_id,year,quantity\nPWR-0001,2025,1\nPWR-0002,2025,\xb2\xe2\n"
    (violation,) = read(content).violations
    assert violation.description.startswith("line 3: ")


def test_every_header_problem_is_reported_at_once() -> None:
    parsed = read(b"acount_id,year,year\n")
    assert reasons(parsed) == [
        ("header[0]", "UNKNOWN_COLUMN"),
        ("header[2]", "DUPLICATE_COLUMN"),
        ("header.account_id", "MISSING_COLUMN"),
        ("header.quantity", "MISSING_COLUMN"),
    ]


def test_a_schema_cannot_key_on_a_column_it_does_not_have() -> None:
    with pytest.raises(ValueError):
        Schema(columns=(Column("a", str),), make=dict, key=("b",))
    with pytest.raises(ValueError):
        Schema(columns=(Column("a", str), Column("a", str)), make=dict)


# == plain number parsers ========================================================


@pytest.mark.parametrize("text", ["1,000", "1e6", "NaN", "inf", "1.", ".5", "0x10", "", "1 000"])
def test_decimals_are_written_plainly(text: str) -> None:
    with pytest.raises(InvalidCommand) as raised:
        parse_decimal(text, reason="INVALID_BENCHMARK", what="benchmark")
    assert raised.value.reason == "INVALID_BENCHMARK"


def test_decimals_parse_exactly_and_integers_wholly() -> None:
    assert str(parse_decimal("0.10", reason="X", what="x")) == "0.10"
    assert parse_decimal("-3.25", reason="X", what="x") == Decimal("-3.25")
    assert parse_int("+7", reason="X", what="x") == 7
    with pytest.raises(InvalidCommand):
        parse_int("7.0", reason="X", what="x")


# == digest and progress =========================================================


def test_the_digest_is_stable_for_the_same_content_and_changes_with_it() -> None:
    digest = read(GOOD).digest
    assert read(GOOD).digest == digest
    assert read(GOOD.encode()).digest == digest
    same = [
        GOOD.replace("\n", "\r\n"),
        "\ufeff" + GOOD,
        GOOD.replace("PWR-0001,2025", '"PWR-0001", 2025 '),
        GOOD + "\n,,,\n",
        (
            "note,quantity,year,account_id\n,9000000,2025,PWR-0001\n"
            "idle plant? no,120,2025,PWR-0002\nidle,0,2025,CEM-0003\n"
        ),
    ]
    assert [read(text).digest for text in same] == [digest] * len(same)
    lines = GOOD.splitlines(keepends=True)
    changed = [
        GOOD.replace("9000000", "9000001"),
        GOOD.replace("idle plant? no", "idle plant"),
        "".join([lines[0], lines[2], lines[1], lines[3]]),
        "".join(lines[:3]),
    ]
    digests = {read(text).digest for text in changed}
    assert len(digests) == len(changed) and digest not in digests


def test_progress_is_reported_in_steps_and_once_at_the_end() -> None:
    calls: list[tuple[int, int]] = []
    rows = "".join(f"PWR-{n:04d},2025,{n}\n" for n in range(5))
    parsed = read_csv(
        "account_id,year,quantity\n" + rows,
        SCHEMA,
        on_progress=lambda done, total: calls.append((done, total)),
        progress_every=2,
    )
    assert parsed.ok
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_progress_ends_at_the_total_even_when_rows_are_bad() -> None:
    calls: list[tuple[int, int]] = []
    read_csv(
        "account_id,year,quantity\nx,2025,1\n",
        SCHEMA,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 1)]

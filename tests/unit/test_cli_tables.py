"""The shared table printer (registry/cli/tables.py): the same rows as an aligned
table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json

import pytest

from registry.cli.remote import HISTORY_COLUMNS
from registry.cli.tables import Column, Table

COLUMNS = [
    Column("unit class", 32),
    Column("total", 16, ">", numeric=True),
    Column("available", 16, ">", numeric=True),
]
ROWS = [("CEA/2025", 1_000_000, 999_000), ("CCER/2024/CCER-2024-0117", 5, 0)]


def printed(output: str, columns: list[Column] = COLUMNS, rows: list[tuple] = ROWS) -> str:
    out = io.StringIO()
    with Table(columns, output, out) as table:
        for row in rows:
            table.row(*row)
        table.note("(a note for people)")
    return out.getvalue()


def test_the_table_is_aligned_with_thousands_separators() -> None:
    assert printed("table").splitlines() == [
        f"{'unit class':<32}{'total':>16}{'available':>16}",
        f"{'CEA/2025':<32}{'1,000,000':>16}{'999,000':>16}",
        f"{'CCER/2024/CCER-2024-0117':<32}{'5':>16}{'0':>16}",
        "(a note for people)",
    ]


def test_json_is_a_list_of_objects_keyed_by_column_numbers_as_numbers() -> None:
    assert json.loads(printed("json")) == [
        {"unit class": "CEA/2025", "total": 1_000_000, "available": 999_000},
        {"unit class": "CCER/2024/CCER-2024-0117", "total": 5, "available": 0},
    ]
    assert json.loads(printed("json", rows=[])) == []  # no note: data alone


def test_csv_has_a_header_and_round_trips_through_dictreader() -> None:
    text = printed("csv")
    assert text.splitlines()[0] == "unit class,total,available"
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"unit class": u, "total": str(t), "available": str(a)} for u, t, a in ROWS
    ]


def test_a_value_with_a_comma_or_quote_stays_one_csv_field() -> None:
    columns = [Column("transaction"), Column("reference")]
    rows = [("mee:T-1", 'court order 7, "urgent"')]
    read = list(csv.DictReader(io.StringIO(printed("csv", columns, rows))))
    assert read == [{"transaction": "mee:T-1", "reference": 'court order 7, "urgent"'}]


def test_history_keeps_its_table_layout() -> None:
    """The shared printer prints ``registry history`` as it was printed before it."""
    row = (12_345, "SETTLEMENT", "DEBIT", "CEA/2025", 1_500, "TRD-SH-0001", "x:T-1", "ref 9")
    lines = printed("table", HISTORY_COLUMNS, [row]).splitlines()
    assert lines[0] == (
        f"{'position':>9}  {'kind':<21}{'dir':<7}{'unit class':<28}{'quantity':>14}  "
        f"{'counterparty':<24}transaction"
    )
    assert lines[1] == (
        f"{12345:>9}  {'SETTLEMENT':<21}{'DEBIT':<7}{'CEA/2025':<28}{1500:>14,}  "
        f"{'TRD-SH-0001':<24}x:T-1  (ref 9)"
    )


def test_a_row_must_fill_every_column_and_the_output_must_be_known() -> None:
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        Table(COLUMNS, "json", io.StringIO()).row("CEA/2025", 1)
    with pytest.raises(ValueError, match="output 'xml'"):
        Table(COLUMNS, "xml", io.StringIO())

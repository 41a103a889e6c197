"""Columns packed by ``pg_arrays`` reach PostgreSQL as exactly the arrays psycopg's own
list dumping sends: the projections' upserts, updates and deletes depend on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.persistence.pg_arrays import PackedArray, packed
from tests.support import PG_SERVER_URL, require_postgres

pytestmark = pytest.mark.postgres

INT8 = (-(2**63), 2**63 - 1)
INT4 = (-(2**31), 2**31 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@pytest.fixture(scope="module")
def cursor() -> Iterator[psycopg.Cursor[Any]]:
    require_postgres()
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn, conn.cursor() as cursor:
        yield cursor


def round_trip(cursor: psycopg.Cursor[Any], value: Any, sql_type: str) -> Any:
    cursor.execute(f"SELECT %s::{sql_type}[]", [value])
    row = cursor.fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    ("values", "sql_type"),
    [
        ([*INT8, 0, -1, 1, 255, 256, 2**32], "BIGINT"),
        ([*INT4, 0, -1, 65_536], "INTEGER"),
        (["", "a,b", '"quoted"', "{braces}", "back\\slash", "NULL", " padded "], "TEXT"),
        (["CN-91110000", "碳排放配额", "émission", "🌍"], "VARCHAR(96)"),
        ([], "BIGINT"),
        ([], "VARCHAR(64)"),
    ],
)
def test_edge_values_arrive_as_sent(
    cursor: psycopg.Cursor[Any], values: list[Any], sql_type: str
) -> None:
    sent = packed(values, sql_type)
    assert isinstance(sent, PackedArray)
    assert round_trip(cursor, sent, sql_type) == values


@settings(max_examples=150, deadline=None)
@given(
    int8=st.lists(st.integers(*INT8), max_size=40),
    int4=st.lists(st.integers(*INT4), max_size=40),
    text=st.lists(TEXT, max_size=40),
)
def test_packed_arrays_equal_psycopgs_own(
    cursor: psycopg.Cursor[Any], int8: list[int], int4: list[int], text: list[str]
) -> None:
    for values, sql_type in ((int8, "BIGINT"), (int4, "INTEGER"), (text, "TEXT")):
        ours = round_trip(cursor, packed(values, sql_type), sql_type)
        assert ours == round_trip(cursor, list(values), sql_type) == values


def test_nulls_and_other_types_are_left_to_psycopg(cursor: psycopg.Cursor[Any]) -> None:
    with_null = packed([1, None, 3], "BIGINT")
    assert type(with_null) is list
    assert round_trip(cursor, with_null, "BIGINT") == [1, None, 3]
    assert type(packed(["2026-01-01"], "DATE")) is list


@pytest.mark.parametrize(
    ("values", "sql_type", "error"),
    [
        ([2**63], "BIGINT", OverflowError),
        ([2**31], "INTEGER", OverflowError),
        (["1"], "BIGINT", TypeError),
        ([1], "TEXT", TypeError),
    ],
)
def test_a_value_that_does_not_fit_is_refused_before_anything_is_sent(
    values: list[Any], sql_type: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        packed(values, sql_type)

"""The capacity plan in docs/operations.md computes from the full benchmark run kept in
docs/performance.md as "Previous full run": a figure the plan quotes from a row that no
longer says it fails here (when that table is replaced, the plan's arithmetic must be
redone). No I/O beyond reading the two documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

# (scenario row prefix, column): the figures the plan's arithmetic starts from.
QUOTED = [
    ("SettleTrades, 1 trade a call, 32 callers", "measured"),
    ("SettleTrades, 1 trade a call, 32 callers", "raw baseline"),
    ("SettleTrades, batches of 1,000", "measured"),
    ("SettleTrades, batches of 1,000", "raw baseline"),
    ("StreamEvents", "measured"),
    ("Projection catch-up", "measured"),
    ("Rebuild of serials", "measured"),
]


def _bench_table() -> dict[str, dict[str, str]]:
    text = (DOCS / "performance.md").read_text(encoding="utf-8")
    begin, end = "<!-- previous-bench-table:begin -->", "<!-- previous-bench-table:end -->"
    table = text.split(begin)[1].split(end)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|") and not line.startswith("|--")
    ]
    header, body = rows[0], rows[1:]
    return {row[0]: dict(zip(header, row, strict=True)) for row in body}


def _capacity_plan() -> str:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    assert "\n## Capacity plan\n" in text, "docs/operations.md has no Capacity plan section"
    return text.split("\n## Capacity plan\n")[1].split("\n## ")[0]


@pytest.mark.parametrize(("scenario", "column"), QUOTED)
def test_the_plan_quotes_the_latest_full_run(scenario: str, column: str) -> None:
    table = _bench_table()
    (row,) = [cells for name, cells in table.items() if name.startswith(scenario)]
    figure = re.match(r"[\d,.]+", row[column])
    assert figure, f"{scenario}: no figure in {column!r}: {row[column]!r}"
    assert figure.group() in _capacity_plan(), (
        f"the full run now says {row[column]} for {scenario} ({column}): redo the "
        "capacity plan's arithmetic in docs/operations.md"
    )

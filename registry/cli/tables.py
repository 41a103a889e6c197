"""The one printer of the commands' tables: aligned text for people, JSON or CSV for
scripts (``--output table|json|csv``), from the same columns and rows.

JSON is a list of objects keyed by column name; a numeric column's values are JSON
numbers (integers, as the registry counts whole tonnes), every other value a string.
CSV has a header row of the column names and plain integers (no thousands separators),
written by the ``csv`` module. Table-only lines (a count, "holds no units") are left out
of JSON and CSV so their output is data alone."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

OUTPUTS = ("table", "json", "csv")


def add_output_option(parser: argparse.ArgumentParser) -> None:
    """``--output table|json|csv`` for a command that prints a table."""
    parser.add_argument(
        "--output",
        choices=OUTPUTS,
        default="table",
        help="table (default, aligned for reading), json (a list of objects keyed by "
        "column name, numbers as numbers) or csv (a header row, then one row per line)",
    )


@dataclass(frozen=True)
class Column:
    """One column: its name (the table header and the JSON/CSV key) and how the table
    shows it."""

    name: str
    width: int = 0
    """Padded to this width in the table (0: as it is; the last column)."""
    align: str = "<"
    numeric: bool = False
    """Integers: thousands separators in the table, JSON numbers."""
    grouped: bool = True
    """A numeric column's thousands separators in the table (not for a position)."""
    gap: int = 0
    """Spaces after the cell in the table."""
    header: str | None = None
    """The table's header text, when not the name."""
    show: Callable[[object], str] | None = None
    """The table's text of a value, when not the value padded."""

    def cell(self, value: object) -> str:
        if self.show is not None:
            text = self.show(value)
        elif self.numeric:
            text = f"{value:{self.align}{self.width}{',' if self.grouped else ''}}"
        else:
            text = f"{value!s:{self.align}{self.width}}"
        return text + " " * self.gap

    def title(self) -> str:
        name = self.name if self.header is None else self.header
        return f"{name:{self.align}{self.width}}" + " " * self.gap


class Table:
    """Rows written as they come (table, CSV) or all at the end (JSON): ``with
    Table(columns, args.output) as table: table.row(...)``."""

    def __init__(self, columns: list[Column], output: str = "table", out: TextIO | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r}: one of {', '.join(OUTPUTS)}")
        self.columns = columns
        self.output = output
        self.out = out if out is not None else sys.stdout
        self.rows: list[dict[str, object]] = []
        self._csv = csv.writer(self.out) if output == "csv" else None
        if output == "table":
            print("".join(c.title() for c in columns), file=self.out)
        elif self._csv is not None:
            self._csv.writerow([c.name for c in columns])

    def row(self, *values: object) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        if self.output == "table":
            line = "".join(c.cell(v) for c, v in zip(self.columns, values, strict=True))
            print(line, file=self.out)
        elif self._csv is not None:
            self._csv.writerow(values)
        else:
            self.rows.append(
                {
                    c.name: int(v) if c.numeric else str(v)  # type: ignore[call-overload]
                    for c, v in zip(self.columns, values, strict=True)
                }
            )

    def note(self, text: str) -> None:
        """A line for the reader of the table (a count, an empty result): not data."""
        if self.output == "table":
            print(text, file=self.out)

    def close(self) -> None:
        if self.output == "json":
            json.dump(self.rows, self.out, indent=2)
            self.out.write("\n")

    def __enter__(self) -> Table:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()

"""Problems of an uploaded file, named by file line and column, because that is what
the person holding the spreadsheet looks for: the file's own (``registry.cli.bulk``
violations) and the server's (``rows[i].column`` of a call that began at a data row)."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from registry.domain.errors import Violation

REPORT_COLUMNS = ("line", "column", "reason", "message")


@dataclass(frozen=True)
class Problem:
    """One reportable problem: the file line (None: the file as a whole) and column."""

    line: int | None
    column: str
    reason: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        column = f", {self.column}" if self.column else ""
        return f"{where}{column}: {self.reason}: {self.message}"


ROW_FIELD = re.compile(r"^rows\[(\d+)\](?:\.(\w+))?$")
_LINE_PREFIX = re.compile(r"^line (\d+): ")


def file_problems(violations: Iterable[Violation]) -> list[Problem]:
    """The problems ``registry.cli.bulk`` found, with the line its descriptions start with."""
    problems = []
    for v in violations:
        found = _LINE_PREFIX.match(v.description)
        line = int(found.group(1)) if found else None
        message = v.description[found.end() :] if found else v.description
        row = ROW_FIELD.match(v.field)
        if row:
            column = row.group(2) or ""
        elif v.field.startswith("header."):
            column = v.field.removeprefix("header.")
        elif v.field.startswith("header["):
            column = "header"
        else:
            column = ""
        problems.append(Problem(line, column, v.reason, message))
    return problems


def server_problems(
    violations: Iterable[tuple[str, str, str]], lines: Sequence[int], offset: int = 0
) -> list[Problem]:
    """The server's ``rows[i].column`` (of a call that began at data row ``offset``) as
    file lines; a field that names no row is kept as it is."""
    problems = []
    for field, reason, description in violations:
        row = ROW_FIELD.match(field)
        if row and offset + int(row.group(1)) < len(lines):
            problems.append(
                Problem(lines[offset + int(row.group(1))], row.group(2) or "", reason, description)
            )
        else:
            problems.append(Problem(None, field, reason, description))
    return problems


def violations_of(error: grpc.RpcError) -> list[tuple[str, str, str]]:
    """(field, reason, description) of each BadRequest field violation of a failed call."""
    status = rpc_status.from_call(cast(grpc.Call, error))
    found: list[tuple[str, str, str]] = []
    for packed in status.details if status is not None else ():
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            found += [(v.field, v.reason, v.description) for v in bad.field_violations]
    return found


def write_report(path: Path | None, problems: Sequence[Problem]) -> None:
    """The problems as CSV (a header only when there are none), for the spreadsheet user."""
    if path is None:
        return
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(
            ("" if p.line is None else p.line, p.column, p.reason, p.message) for p in problems
        )


def print_problems(headline: str, problems: Sequence[Problem], command: str = "import") -> None:
    print(f"registry {command}: {headline}", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)

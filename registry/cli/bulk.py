"""Row-by-row validation of CSV uploads: allocation tables, output data, verified emissions.

Regulators load these from spreadsheets with thousands of rows. One typo must not cost
a round trip per row, so a file is checked whole and *every* problem is reported at once,
each a ``Violation`` named the way the API names bad rows of a bulk request:

- ``file``                 the bytes cannot be read (encoding);
- ``header[i]``            header cell ``i`` (0-based) is unknown or duplicated;
- ``header.<column>``      a required column is missing;
- ``rows``                 the file as a batch (no data rows, too many rows);
- ``rows[i]``, ``rows[i].<column>``  data row ``i``, counted **from 0** over the data
  rows only (the header and blank lines are not rows), as in ``rows[3].quantity``.

Every row-level description starts with ``line N:``, the **1-based line of the file**
where the record starts (the header is usually line 1), which is what a spreadsheet
user looks for.

Reading rules: UTF-8 only (one leading BOM is accepted and dropped); RFC 4180 quoting
(the csv module's excel dialect, strict); cells are stripped of surrounding whitespace;
records whose cells are all empty are skipped (spreadsheets export trailing ``,,,``);
column names are exact and case sensitive, in any order; an optional column may be
absent, which is the same as leaving all its cells empty.

A file whose bytes, CSV syntax or header are unusable is rejected as a whole
(``InvalidFile``) because its rows cannot be interpreted; otherwise every row is
checked and all bad rows are reported (``RowsInvalid``). Nothing is half-accepted.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from registry.domain.errors import InvalidCommand, InvalidFile, RowsInvalid, Violation

T = TypeVar("T")

Progress = Callable[[int, int], None]
"""``on_progress(rows_done, rows_total)``: called as data rows are checked."""


class SupportsReadBytes(Protocol):
    """A file-like path: ``pathlib.Path`` or an ``importlib.resources`` Traversable."""

    def read_bytes(self) -> bytes: ...


Source = str | bytes | os.PathLike[str] | SupportsReadBytes
"""``str`` is CSV *text* (never a path); ``bytes`` and paths are checked for UTF-8."""


@dataclass(frozen=True)
class Column:
    """One column of a schema.

    ``parse`` turns a stripped, non-empty cell into a value or raises ``InvalidCommand``
    whose ``reason`` becomes the violation's reason. A required column must be in the
    header and every cell of it must be non-empty; an optional column may be absent, and
    an empty cell gets ``default`` without calling ``parse``.
    """

    name: str
    parse: Callable[[str], object]
    required: bool = True
    default: object = None


@dataclass(frozen=True)
class Schema(Generic[T]):
    """The columns of a file, how to build a record, and which columns form its key.

    ``make`` gets the parsed values of a row whose cells are all valid and returns the
    record; it may raise ``InvalidCommand`` for rules spanning columns, with a ``field``
    metadata item naming the column to blame. ``key`` columns must be unique across the
    file (compared as parsed values). ``max_rows`` bounds a file (``None``: no bound).
    """

    columns: tuple[Column, ...]
    make: Callable[[Mapping[str, Any]], T]
    key: tuple[str, ...] = ()
    max_rows: int | None = None

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in schema: {names}")
        if not set(self.key) <= set(names):
            raise ValueError(f"key {self.key} names columns not in the schema {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class ParsedFile(Generic[T]):
    """The result of reading a file: all its records, or every problem found.

    ``rows`` (and ``lines``, the file line of each) are empty unless ``ok``. ``digest``
    is the sha256 (hex) of the normalised content, set only when ``ok``: an importer
    keys re-submissions on it so that sending the same file twice is idempotent.
    """

    rows: tuple[T, ...] = ()
    lines: tuple[int, ...] = ()
    violations: tuple[Violation, ...] = ()
    digest: str = ""
    rows_total: int = 0
    unreadable: bool = field(default=False, repr=False)
    """True when the file as a whole was rejected (encoding, CSV syntax, header)."""

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def error(self) -> RowsInvalid | None:
        """The error to raise for this file (None when it is valid)."""
        if self.ok:
            return None
        if self.unreadable:
            return InvalidFile(
                f"the file cannot be read as rows: {self.violations[0].description}",
                violations=self.violations,
            )
        bad = len({v.field.split(".")[0] for v in self.violations})
        return RowsInvalid(
            f"{bad} of {self.rows_total} rows are invalid; nothing was read",
            violations=self.violations,
        )

    def check(self) -> tuple[T, ...]:
        """The records, or raise ``RowsInvalid`` / ``InvalidFile`` naming every problem."""
        error = self.error
        if error is not None:
            raise error
        return self.rows


def read_csv(
    source: Source,
    schema: Schema[T],
    *,
    on_progress: Progress | None = None,
    progress_every: int = 1000,
) -> ParsedFile[T]:
    """Read and validate a whole CSV file against ``schema``; never raises for its content.

    ``on_progress(rows_done, rows_total)`` is called after every ``progress_every`` data
    rows and once at the end.
    """
    text = _text(source)
    if isinstance(text, Violation):
        return _unreadable(text)
    records, syntax_error = _records(text)
    if syntax_error is not None:
        line, message = syntax_error
        where = "header" if not records else f"rows[{len(records) - 1}]"
        return _unreadable(
            Violation(where, "MALFORMED_CSV", f"line {line}: {message}; the rest was not read")
        )
    if not records:
        return _unreadable(Violation("file", "EMPTY_FILE", "the file has no header line"))
    (header_line, header), data = records[0], records[1:]
    positions, problems = _header(header, header_line, schema)
    if problems:
        return _unreadable(*problems)
    if not data:
        return _unreadable(
            Violation(
                "rows", "EMPTY_BATCH", f"the file has a header (line {header_line}) but no rows"
            )
        )
    if schema.max_rows is not None and len(data) > schema.max_rows:
        return _unreadable(
            Violation(
                "rows", "BATCH_TOO_LARGE", f"{len(data)} rows; at most {schema.max_rows} per file"
            )
        )
    return _rows(data, len(header), positions, schema, on_progress, max(progress_every, 1))


# == parsers for columns =========================================================

_INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")
_DECIMAL = re.compile(r"^[+-]?[0-9]{1,18}(\.[0-9]{1,18})?$")


def parse_int(text: str, *, reason: str, what: str) -> int:
    """A whole number written plainly (``2025``, ``-3``); no separators or exponent."""
    if not _INTEGER.match(text):
        raise InvalidCommand(f"{what} {text!r} is not a whole number", reason=reason)
    return int(text)


def parse_decimal(text: str, *, reason: str, what: str) -> Decimal:
    """An exact decimal written plainly (``0.8177``); no separators, exponent, NaN or inf.

    Parsed from text straight to ``Decimal``: a float never comes near the value.
    """
    if not _DECIMAL.match(text):
        raise InvalidCommand(f"{what} {text!r} is not a decimal number like 0.8177", reason=reason)
    return Decimal(text)


# == internals ===================================================================


def _unreadable(*violations: Violation) -> ParsedFile[Any]:
    return ParsedFile(violations=violations, unreadable=True)


def _text(source: Source) -> str | Violation:
    if isinstance(source, str):
        return source.removeprefix("\ufeff")
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, os.PathLike):
        data = Path(os.fspath(source)).read_bytes()
    else:
        data = source.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Violation(
            "file", "INVALID_ENCODING", 'the file is UTF-16; save it as UTF-8 ("CSV UTF-8")'
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return Violation(
            "file",
            "INVALID_ENCODING",
            f"line {line}: byte {error.start} is not UTF-8; save the file as "
            f'UTF-8 ("CSV UTF-8"), not GBK or another local code page',
        )


def _records(text: str) -> tuple[list[tuple[int, list[str]]], tuple[int, str] | None]:
    """Non-blank records as (first line, stripped cells); stops at a CSV syntax error."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            stripped = [cell.strip() for cell in cells]
            if any(stripped):
                records.append((start, stripped))
            start = reader.line_num + 1
    except csv.Error as error:
        return records, (start, str(error))
    return records, None


def _header(
    header: Sequence[str], line: int, schema: Schema[Any]
) -> tuple[dict[str, int], list[Violation]]:
    known = schema.names
    positions: dict[str, int] = {}
    problems: list[Violation] = []
    for index, name in enumerate(header):
        if name not in known:
            shown = f"{name!r}" if name else "has no name and"
            problems.append(
                Violation(
                    f"header[{index}]",
                    "UNKNOWN_COLUMN",
                    f"line {line}: column {index + 1} {shown} is not one of {', '.join(known)}",
                )
            )
        elif name in positions:
            problems.append(
                Violation(
                    f"header[{index}]",
                    "DUPLICATE_COLUMN",
                    f"line {line}: column {index + 1} repeats {name!r} (column "
                    f"{positions[name] + 1})",
                )
            )
        else:
            positions[name] = index
    for column in schema.columns:
        if column.required and column.name not in positions:
            problems.append(
                Violation(
                    f"header.{column.name}",
                    "MISSING_COLUMN",
                    f"line {line}: the header lacks column {column.name!r}",
                )
            )
    return positions, problems


def _rows(
    data: Sequence[tuple[int, list[str]]],
    width: int,
    positions: Mapping[str, int],
    schema: Schema[T],
    on_progress: Progress | None,
    every: int,
) -> ParsedFile[T]:
    total = len(data)
    records: list[T] = []
    violations: list[Violation] = []
    keys: dict[tuple[object, ...], tuple[int, int]] = {}
    normalised: list[list[str]] = []
    for index, (line, cells) in enumerate(data):
        name = f"rows[{index}]"
        if len(cells) != width:
            violations.append(
                Violation(
                    name,
                    "WRONG_CELL_COUNT",
                    f"line {line}: {len(cells)} cells, the header has {width}",
                )
            )
        else:
            row = [cells[positions[c]] if c in positions else "" for c in schema.names]
            normalised.append(row)
            record = _row(index, line, row, schema, keys, violations)
            if record is not None:
                records.append(record)
        if on_progress is not None and (index + 1) % every == 0 and index + 1 < total:
            on_progress(index + 1, total)
    if on_progress is not None:
        on_progress(total, total)
    if violations:
        return ParsedFile(violations=tuple(violations), rows_total=total)
    return ParsedFile(
        rows=tuple(records),
        lines=tuple(line for line, _ in data),
        digest=_digest(schema.names, normalised),
        rows_total=total,
    )


def _row(
    index: int,
    line: int,
    cells: Sequence[str],
    schema: Schema[T],
    keys: dict[tuple[object, ...], tuple[int, int]],
    violations: list[Violation],
) -> T | None:
    """Parse one row (cells in schema order); append its problems; the record if none."""
    name = f"rows[{index}]"
    values: dict[str, Any] = {}
    before = len(violations)
    for column, cell in zip(schema.columns, cells, strict=True):
        if not cell:
            if column.required:
                violations.append(
                    Violation(
                        f"{name}.{column.name}",
                        "MISSING_FIELD",
                        f"line {line}: {column.name} is empty",
                    )
                )
            else:
                values[column.name] = column.default
            continue
        try:
            values[column.name] = column.parse(cell)
        except InvalidCommand as error:
            violations.append(
                Violation(f"{name}.{column.name}", error.reason, f"line {line}: {error.message}")
            )
    if schema.key and all(k in values for k in schema.key):
        key = tuple(values[k] for k in schema.key)
        first = keys.setdefault(key, (index, line))
        if first[0] != index:
            violations.append(
                Violation(
                    f"{name}.{schema.key[0]}",
                    "DUPLICATE_ROW",
                    f"line {line}: rows[{first[0]}] (line {first[1]}) already gives "
                    f"{', '.join(schema.key)} = {', '.join(map(str, key))}",
                )
            )
    if len(violations) > before:
        return None
    try:
        return schema.make(values)
    except InvalidCommand as error:
        blamed = error.metadata.get("field")
        violations.append(
            Violation(
                f"{name}.{blamed}" if blamed else name,
                error.reason,
                f"line {line}: {error.message}",
            )
        )
        return None


def _digest(names: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """sha256 over the rows as read: in file order, cells stripped, in schema column order.

    So re-saving a file with CRLF line ends, a BOM, other quoting, reordered columns,
    blank lines or an absent optional column gives the same digest; changing any cell or
    the order of rows gives another.
    """
    content = json.dumps(
        {"columns": list(names), "rows": [list(r) for r in rows]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(content.encode("utf-8")).hexdigest()

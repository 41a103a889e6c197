"""``registry import``: load a regulator's CSV file into a running registry.

    registry import emissions verified-2025.csv [--dry-run] [--report problems.csv]
    registry import emissions verified-2025.csv --propose P-VE-2025
    registry import allocations pre-allocation-2025.csv [--dry-run] [--report problems.csv]
    registry import allocations pre-allocation-2025.csv --propose P-PRE-2025
    registry import accounts accounts.csv [--dry-run] [--report problems.csv]

A file is validated whole first (``registry.cli.bulk``) and nothing is sent unless every
row is valid, so a typo on line 4,812 costs one run, not a half-loaded table. Then:

- **emissions** go in ONE ``RecordVerifiedEmissions`` call, which the server applies
  all or nothing; that is why a file holds at most 10,000 rows (the call's limit).
  Sending the same file again changes nothing: every row comes back ``UNCHANGED``.
- **emissions --propose ID** sends the whole file as one ``VERIFIED_EMISSIONS``
  proposal instead: nothing is recorded until a second regulator approves it, which is
  how verified emissions go in when four eyes are required. A reason shared by every
  row is written once (the table's), so 10,000 rows stay well inside the 4 MiB a
  proposal may carry; a file over it is refused here, before anything is sent.
- **allocations** go in ``AllocateUnits`` calls of at most 1,000 rows. Each row is
  idempotent by its ``transaction_id``, so re-running the same file after an
  interruption completes what the first run left and replays the rest as
  ``ALREADY_COMPLETED``. A row of ``kind`` ``ALLOCATION_RETURN`` (a true-up that had
  allocated too much) takes the units back to the reserve instead.
- **allocations --propose ID** sends the whole file as one ``ALLOCATION_TABLE``
  proposal instead (at most 10,000 rows): nothing moves until a second regulator
  approves it (``registry proposals approve``), which is how a table goes in when
  four eyes are required.
- **accounts** are opened one ``OpenAccount`` call each (8 in flight). Opening an
  account again with the same details replays it (``ALREADY_OPEN``), so a re-run
  completes an interrupted one; an id taken with other details is refused and named.

Problems, from the file or from the server, are reported by **file line** and column,
because that is what the person holding the spreadsheet looks for.

Exit codes: 0 all rows applied (or already there); 1 some allocation rows were
REFUSED or REJECTED by the ledger (the others were applied); 2 nothing sent or the
server refused the request (a bad file, a bad row the server found, no connection).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc

from registry.cli.bulk import Column, ParsedFile, Progress, Schema, parse_int, read_csv
from registry.cli.exits import Exit, exit_for_status
from registry.cli.problems import (
    ROW_FIELD,
    Problem,
    file_problems,
    print_problems,
    server_problems,
    violations_of,
    write_report,
)
from registry.cli.remote import (
    add_connection_options,
    client_for,
    report_error,
    report_error_details,
)
from registry.client import ErrorDetails, error_details
from registry.domain.errors import InvalidCommand
from registry.domain.ids import check_client_id
from registry.domain.reasons import check_reason
from registry.domain.units import MAX_VINTAGE, MIN_VINTAGE, parse_unit_type
from registry.observability.progress import Progress as RowsProgress
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common_pb

if TYPE_CHECKING:
    from registry.domain.accounts import AccountType, Holder
    from registry.domain.rules import UnitLine

T = TypeVar("T")


def check_account_id(account_id: str) -> str:
    """``registry.domain.accounts.check_account_id``, imported when a row is checked:
    the schemas below are built at import, and the domain module imports eventsourcing."""
    from registry.domain.accounts import check_account_id as check

    return check(account_id)


def parse_account_type(value: str) -> AccountType:
    """``registry.domain.accounts.parse_account_type``, imported when first called."""
    from registry.domain.accounts import parse_account_type as parse

    return parse(value)


MAX_EMISSIONS_ROWS = 10_000
"""One ``RecordVerifiedEmissions`` call is one atomic unit and takes at most this many."""
MAX_PROPOSAL_ROWS = 10_000
"""An approved ALLOCATION_TABLE is carried out as one batch, which takes at most this."""
ALLOCATION_BATCH = 1_000
OPENING_CALLERS = 8
"""Account openings in flight at once: the server saves concurrent openings together."""
REFUSING_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)
"""A row's own problem: report it and go on; any other failure stops the run."""
"""Rows per ``AllocateUnits`` call: small enough to report progress and bound a retry."""
PROGRESS_EVERY = 1_000


# == the two file formats ========================================================


@dataclass(frozen=True)
class EmissionsLine:
    """One verified figure: tonnes CO2e of a compliance account in a compliance year."""

    account_id: str
    compliance_year: int
    verified_emissions: int
    reason: str
    unit_lines: tuple[UnitLine, ...] = ()
    """The figure by unit or unit category (power), from the optional ``unit_lines``
    column: ``CATEGORY:UNIT_ID:VERIFIED:ALLOCATED`` separated by ``;``."""

    def payload_row(self, reason: bool) -> dict[str, object]:
        """The row as a ``VERIFIED_EMISSIONS`` payload row (its reason only if asked)."""
        row: dict[str, object] = {
            "account_id": self.account_id,
            "compliance_year": self.compliance_year,
            "verified_emissions": self.verified_emissions,
        }
        if reason:
            row["reason"] = self.reason
        if self.unit_lines:
            row["unit_lines"] = [
                {
                    "unit_category": u.category,
                    "unit_id": u.unit_id,
                    "verified_emissions": u.verified_emissions,
                    "allocated": u.allocated,
                }
                for u in self.unit_lines
            ]
        return row


@dataclass(frozen=True)
class AllocationLine:
    """One free allocation; ``source`` empty means the allocation reserve."""

    transaction_id: str
    account_id: str
    unit_type: str
    vintage: int | None
    quantity: int
    source: str
    reason: str
    kind: str = "ALLOCATION"
    """``ALLOCATION`` (to the account) or ``ALLOCATION_RETURN`` (back to the reserve)."""

    @property
    def returned(self) -> bool:
        return self.kind == "ALLOCATION_RETURN"

    def payload_row(self) -> dict[str, object]:
        """The row as an ``ALLOCATION_TABLE`` proposal payload row."""
        row: dict[str, object] = {
            "transaction_id": self.transaction_id,
            "account_id": self.account_id,
            "unit_type": self.unit_type,
            "quantity": self.quantity,
            "reason": self.reason,
        }
        if self.vintage is not None:
            row["vintage"] = self.vintage
        if self.source:
            row["source"] = self.source
        if self.returned:
            row["return"] = True
        return row


def _year(text: str) -> int:
    from registry.domain.obligations import check_year

    return check_year(parse_int(text, reason="INVALID_COMPLIANCE_YEAR", what="compliance year"))


def _emissions(text: str) -> int:
    value = parse_int(text, reason="INVALID_EMISSIONS", what="verified emissions")
    if value < 0:
        raise InvalidCommand(
            f"verified emissions must be >= 0 tonnes, got {value}", reason="INVALID_EMISSIONS"
        )
    return value


def _unit_lines(text: str) -> tuple[UnitLine, ...]:
    """``CATEGORY:UNIT_ID:VERIFIED:ALLOCATED;...`` (UNIT_ID may be empty), e.g.
    ``GAS:G1:30000:25000;COAL_CONVENTIONAL_300MW_PLUS:C1:100000:70000``."""
    from registry.domain.rules import UnitLine

    lines = []
    for number, part in enumerate(text.split(";"), start=1):
        cells = [cell.strip() for cell in part.split(":")]
        if len(cells) != 4:
            raise InvalidCommand(
                f"unit line {number} {part.strip()!r} is not CATEGORY:UNIT_ID:VERIFIED:ALLOCATED",
                reason="INVALID_UNIT_LINE",
            )
        category, unit_id, verified, allocated = cells
        lines.append(
            UnitLine(
                category,
                unit_id,
                parse_int(verified, reason="INVALID_EMISSIONS", what="unit verified emissions"),
                parse_int(allocated, reason="INVALID_ALLOCATION", what="unit allocation"),
            )
        )
    return tuple(lines)


def _emissions_line(values: Mapping[str, Any]) -> EmissionsLine:
    from registry.domain.rules import unit_line_violations

    line = EmissionsLine(**values)
    for problem in unit_line_violations(line.verified_emissions, line.unit_lines):
        raise InvalidCommand(
            f"{problem.field}: {problem.description}", reason=problem.reason, field="unit_lines"
        )
    return line


def _quantity(text: str) -> int:
    value = parse_int(text, reason="INVALID_QUANTITY", what="quantity")
    if value <= 0:
        raise InvalidCommand(
            f"quantity must be a whole number of tonnes > 0, got {value}", reason="INVALID_QUANTITY"
        )
    return value


def _vintage(text: str) -> int:
    value = parse_int(text, reason="INVALID_VINTAGE", what="vintage")
    if not MIN_VINTAGE <= value <= MAX_VINTAGE:
        raise InvalidCommand(
            f"vintage {value} is outside {MIN_VINTAGE}..{MAX_VINTAGE}", reason="INVALID_VINTAGE"
        )
    return value


def _unit_type(text: str) -> str:
    return parse_unit_type(text).value


def _transaction_id(text: str) -> str:
    return check_client_id(text, "transaction id")


ALLOCATION_KINDS = ("ALLOCATION", "ALLOCATION_RETURN")


def _allocation_kind(text: str) -> str:
    if text not in ALLOCATION_KINDS:
        raise InvalidCommand(
            f"kind {text!r} must be ALLOCATION or ALLOCATION_RETURN",
            reason="INVALID_ALLOCATION_KIND",
        )
    return text


EMISSIONS_SCHEMA: Schema[EmissionsLine] = Schema(
    columns=(
        Column("account_id", check_account_id),
        Column("compliance_year", _year),
        Column("verified_emissions", _emissions),
        Column("reason", check_reason),
        Column("unit_lines", _unit_lines, required=False, default=()),
    ),
    make=_emissions_line,
    key=("account_id", "compliance_year"),
    max_rows=MAX_EMISSIONS_ROWS,
)

ALLOCATIONS_SCHEMA: Schema[AllocationLine] = Schema(
    columns=(
        Column("transaction_id", _transaction_id),
        Column("account_id", check_account_id),
        Column("unit_type", _unit_type),
        Column("vintage", _vintage, required=False, default=None),
        Column("quantity", _quantity),
        Column("source", check_account_id, required=False, default=""),
        Column("reason", check_reason),
        Column("kind", _allocation_kind, required=False, default="ALLOCATION"),
    ),
    make=lambda v: AllocationLine(**v),
    key=("transaction_id",),
)


@dataclass(frozen=True)
class AccountLine:
    """One account to open; the holder details a compliance account needs all of."""

    account_id: str
    account_type: str
    name: str
    credit_code: str
    sector: str
    province: str

    def holder(self) -> Holder:
        from registry.domain.accounts import Holder

        return Holder(self.name, self.credit_code, self.sector, self.province)


HOLDER_COLUMNS = {
    "INVALID_HOLDER": "name",
    "INVALID_CREDIT_CODE": "credit_code",
    "INVALID_SECTOR": "sector",
    "MISSING_PROVINCE": "province",
}
"""Which column a holder's refusal reason is about, to name it in the report."""


def _account_line(values: Mapping[str, Any]) -> AccountLine:
    line = AccountLine(**values)
    try:
        line.holder().validate(parse_account_type(line.account_type))
    except InvalidCommand as error:
        raise InvalidCommand(
            error.message, reason=error.reason, field=HOLDER_COLUMNS.get(error.reason, "")
        ) from None
    return line


ACCOUNTS_SCHEMA: Schema[AccountLine] = Schema(
    columns=(
        Column("account_id", check_account_id),
        Column("account_type", lambda text: parse_account_type(text).value),
        Column("name", str),
        Column("credit_code", str, required=False, default=""),
        Column("sector", str, required=False, default=""),
        Column("province", str, required=False, default=""),
    ),
    make=_account_line,
    key=("account_id",),
)


def account_request(line: AccountLine) -> admin_pb.OpenAccountRequest:
    sector = (
        common_pb.Sector.Value(f"SECTOR_{line.sector}")
        if line.sector
        else common_pb.SECTOR_UNSPECIFIED
    )
    return admin_pb.OpenAccountRequest(
        account_id=line.account_id,
        account_type=common_pb.AccountType.Value(f"ACCOUNT_TYPE_{line.account_type}"),
        holder=common_pb.Holder(
            name=line.name, credit_code=line.credit_code, sector=sector, province=line.province
        ),
    )


def emissions_request(rows: Sequence[EmissionsLine]) -> admin_pb.RecordVerifiedEmissionsRequest:
    return admin_pb.RecordVerifiedEmissionsRequest(
        rows=[
            admin_pb.VerifiedEmissionsRow(
                account_id=r.account_id,
                compliance_year=r.compliance_year,
                verified_emissions=r.verified_emissions,
                reason=r.reason,
                unit_lines=[
                    admin_pb.VerifiedEmissionsUnitLine(
                        unit_category=u.category,
                        unit_id=u.unit_id,
                        verified_emissions=u.verified_emissions,
                        allocated=u.allocated or 0,
                    )
                    for u in r.unit_lines
                ],
            )
            for r in rows
        ]
    )


def allocation_request(rows: Sequence[AllocationLine]) -> admin_pb.AllocateUnitsRequest:
    return admin_pb.AllocateUnitsRequest(
        rows=[
            admin_pb.AllocationRow(
                transaction_id=r.transaction_id,
                account_id=r.account_id,
                unit_type=common_pb.UnitType.Value(f"UNIT_TYPE_{r.unit_type}"),
                vintage=r.vintage,
                quantity=r.quantity,
                reason=r.reason,
                source_account=r.source,
                allocation_return=r.returned,
            )
            for r in rows
        ]
    )


# == the command =================================================================


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = sub.add_parser(
        "import",
        help="load a CSV file (verified emissions, "
        "allocations) into a running server, validated whole first",
    )
    kinds = command.add_subparsers(dest="kind", required=True)
    emissions = kinds.add_parser(
        "emissions",
        help="account_id,compliance_year,"
        "verified_emissions,reason[,unit_lines]: all rows in one atomic call "
        f"(at most {MAX_EMISSIONS_ROWS:,})",
    )
    emissions.set_defaults(run=_import_emissions)
    emissions.add_argument(
        "--propose",
        metavar="PROPOSAL_ID",
        default="",
        help="propose the whole file as one VERIFIED_EMISSIONS table for a second "
        "regulator to approve (four eyes) instead of recording it",
    )
    allocations = kinds.add_parser(
        "allocations",
        help="transaction_id,account_id,unit_type,"
        "vintage,quantity,source,reason: idempotent by "
        "transaction_id, so a re-run completes an interrupted one",
    )
    allocations.set_defaults(run=_import_allocations)
    allocations.add_argument(
        "--propose",
        metavar="PROPOSAL_ID",
        default="",
        help="propose the whole file as one ALLOCATION_TABLE for a "
        "second regulator to approve (four eyes) instead of allocating",
    )
    accounts = kinds.add_parser(
        "accounts",
        help="account_id,account_type,name,credit_code,"
        "sector,province: opened one by one, a re-run replays the "
        "accounts already open",
    )
    accounts.set_defaults(run=_import_accounts)
    for parser in (emissions, allocations, accounts):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--dry-run", action="store_true", help="validate the file only; send nothing"
        )
        parser.add_argument(
            "--report",
            type=Path,
            default=None,
            help="write every problem as CSV (line,column,reason,message)",
        )
        add_connection_options(parser)


def _progress(meter: RowsProgress) -> Progress:
    """``read_csv``'s ``on_progress`` drawing ``meter`` (a terminal only)."""

    def report(done: int, total: int) -> None:
        meter.update(done, total=total)

    return report


def _validated(args: argparse.Namespace, parsed: ParsedFile[T]) -> tuple[T, ...] | None:
    """The rows to send; None when there is nothing to send (a dry run, or a bad file,
    after reporting every problem of it)."""
    if parsed.ok:
        print(f"{args.file}: {len(parsed.rows):,} rows valid (sha256 {parsed.digest})")
        if args.dry_run:
            write_report(args.report, [])
            print("dry run: nothing sent")
            return None
        return parsed.rows
    problems = file_problems(parsed.violations)
    error = parsed.error
    print_problems(
        f"{args.file}: {error.message if error else 'invalid'}. Nothing was sent.", problems
    )
    write_report(args.report, problems)
    return None


def _read(args: argparse.Namespace, schema: Schema[T]) -> ParsedFile[T] | int:
    try:
        with RowsProgress(f"{args.file.name}: validated", unit="rows") as meter:
            return read_csv(
                args.file, schema, on_progress=_progress(meter), progress_every=PROGRESS_EVERY
            )
    except OSError as error:
        print(f"registry import: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return Exit.USAGE


def _load(args: argparse.Namespace, schema: Schema[T]) -> tuple[ParsedFile[T], tuple[T, ...]] | int:
    """The file and its rows to send, or the exit code when there is nothing to send
    (a dry run, or a bad file whose every problem was reported)."""
    parsed = _read(args, schema)
    if isinstance(parsed, int):
        return parsed
    rows = _validated(args, parsed)
    if rows is None:
        return 0 if parsed.ok else Exit.INVALID
    return parsed, rows


def _import_emissions(args: argparse.Namespace) -> int:
    loaded = _load(args, EMISSIONS_SCHEMA)
    if isinstance(loaded, int):
        return loaded
    parsed, rows = loaded
    if args.propose:
        return _propose_emissions(args, rows, parsed.digest)
    try:
        with client_for(args, timeout=300) as client:
            reply = client.call(
                client.administration.RecordVerifiedEmissions, emissions_request(rows)
            )
    except grpc.RpcError as error:
        return _server_refused(
            args,
            error,
            parsed.lines,
            0,
            "no row of the file was recorded (one call, all or nothing)",
        )
    print(f"sent {len(rows):,} of {len(rows):,} rows", file=sys.stderr)
    counts = Counter(
        admin_pb.EmissionsRowStatus.Name(r.status).removeprefix("EMISSIONS_ROW_STATUS_")
        for r in reply.results
    )
    write_report(args.report, [])
    print(
        f"RECORDED {counts['RECORDED']:,}, UNCHANGED {counts['UNCHANGED']:,}"
        + (f" (position {reply.position})" if reply.position else "")
    )
    if not counts["RECORDED"]:
        print("nothing changed: every figure was already recorded")
    return 0


def emissions_payload(rows: Sequence[EmissionsLine]) -> dict[str, object]:
    """The file as a ``VERIFIED_EMISSIONS`` payload: a reason every row shares is given
    once, for the table, and left out of the rows."""
    reasons = {r.reason for r in rows}
    shared = reasons.pop() if len(reasons) == 1 else None
    table = [r.payload_row(reason=shared is None) for r in rows]
    return {"rows": table} if shared is None else {"reason": shared, "rows": table}


def _propose_emissions(args: argparse.Namespace, rows: Sequence[EmissionsLine], digest: str) -> int:
    """One VERIFIED_EMISSIONS proposal holding every row; proposing it again with the
    same id and file replays it."""
    from registry.domain.proposals import MAX_PAYLOAD_BYTES

    payload = json.dumps(emissions_payload(rows), separators=(",", ":"))
    size = len(payload.encode())
    if size > MAX_PAYLOAD_BYTES:
        print(
            f"registry import: the table is {size:,} bytes as a proposal, over the "
            f"{MAX_PAYLOAD_BYTES:,} one proposal may carry (long per-row reasons?): "
            "split the file. Nothing was sent.",
            file=sys.stderr,
        )
        return Exit.INVALID
    request = admin_pb.ProposeActionRequest(
        proposal_id=args.propose,
        kind=admin_pb.PROPOSAL_KIND_VERIFIED_EMISSIONS,
        payload_json=payload,
        reason=f"verified emissions {args.file.name} sha256 {digest}"[:500],
    )
    try:
        with client_for(args, timeout=300) as client:
            reply = client.call(client.administration.ProposeAction, request)
    except grpc.RpcError as error:
        return _server_refused(args, error, [], 0, "nothing was proposed")
    p = reply.proposal
    print(
        f"{'already proposed' if reply.replayed else 'proposed'} {p.party}:{p.proposal_id}: "
        f"VERIFIED_EMISSIONS of {len(rows):,} rows "
        f"({sum(r.verified_emissions for r in rows):,} t), pending until "
        f"{p.expire_time.ToDatetime():%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"a second regulator approves it with: registry proposals approve {p.party} {p.proposal_id}"
    )
    write_report(args.report, [])
    return 0


def _import_accounts(args: argparse.Namespace) -> int:
    loaded = _load(args, ACCOUNTS_SCHEMA)
    if isinstance(loaded, int):
        return loaded
    parsed, rows = loaded
    counts: Counter[str] = Counter()
    problems: list[Problem] = []
    with (
        client_for(args, timeout=60) as client,
        ThreadPoolExecutor(OPENING_CALLERS) as pool,
        RowsProgress("opened", len(rows), unit="accounts") as meter,
    ):

        def open_one(line: AccountLine) -> admin_pb.OpenAccountResponse | ErrorDetails:
            try:
                return client.call(client.administration.OpenAccount, account_request(line))
            except grpc.RpcError as error:
                return error_details(error)

        for done, (row, line, reply) in enumerate(
            zip(rows, parsed.lines, pool.map(open_one, rows), strict=True), 1
        ):
            if isinstance(reply, ErrorDetails):
                if reply.code not in REFUSING_CODES:
                    meter.close()  # end the progress line before the message
                    print(
                        f"registry import: {done - 1:,} rows were sent; the same file "
                        "again completes the rest",
                        file=sys.stderr,
                    )
                    return report_error_details(reply)
                problems.append(
                    Problem(
                        line,
                        "account_id",
                        reply.reason or reply.code.name,
                        f"{row.account_id}: {reply.message}",
                    )
                )
            else:
                counts["ALREADY_OPEN" if reply.replayed else "OPENED"] += 1
            meter.update(done)
    print(
        f"OPENED {counts['OPENED']:,}, ALREADY_OPEN {counts['ALREADY_OPEN']:,}, "
        f"REFUSED {len(problems):,}"
    )
    if problems:
        print_problems(f"{len(problems):,} account(s) not opened", problems)
    write_report(args.report, problems)
    return Exit.FINDING if problems else 0


def _import_allocations(args: argparse.Namespace) -> int:
    loaded = _load(args, ALLOCATIONS_SCHEMA)
    if isinstance(loaded, int):
        return loaded
    parsed, rows = loaded
    if args.propose:
        return _propose_allocations(args, rows, parsed.digest)
    results: list[tuple[int, admin_pb.AllocationResult]] = []
    with (
        client_for(args, timeout=300) as client,
        RowsProgress("sent", len(rows), unit="rows") as meter,
    ):
        for start in range(0, len(rows), ALLOCATION_BATCH):
            chunk = rows[start : start + ALLOCATION_BATCH]
            try:
                reply = client.call(client.administration.AllocateUnits, allocation_request(chunk))
            except grpc.RpcError as error:
                meter.close()  # end the progress line before the message
                return _server_refused(
                    args,
                    error,
                    parsed.lines,
                    start,
                    f"{start:,} rows (before line {parsed.lines[start]}) were sent; fix the "
                    "cause and run the same file again: sent rows replay as "
                    "ALREADY_COMPLETED",
                )
            results += zip(parsed.lines[start:], reply.results, strict=False)
            meter.update(start + len(chunk))
    return _summarise_allocations(args, results)


def _propose_allocations(
    args: argparse.Namespace, rows: Sequence[AllocationLine], digest: str
) -> int:
    """One ALLOCATION_TABLE proposal holding every row; proposing it again with the same
    id and file replays it."""
    if len(rows) > MAX_PROPOSAL_ROWS:
        print(
            f"registry import: {len(rows):,} rows: a proposal carries at most "
            f"{MAX_PROPOSAL_ROWS:,} (what one approval allocates at once); split the "
            "file. Nothing was sent.",
            file=sys.stderr,
        )
        return Exit.INVALID
    request = admin_pb.ProposeActionRequest(
        proposal_id=args.propose,
        kind=admin_pb.PROPOSAL_KIND_ALLOCATION_TABLE,
        payload_json=json.dumps({"rows": [row.payload_row() for row in rows]}),
        reason=f"allocation table {args.file.name} sha256 {digest}"[:500],
    )
    try:
        with client_for(args, timeout=300) as client:
            reply = client.call(client.administration.ProposeAction, request)
    except grpc.RpcError as error:
        return _server_refused(args, error, [], 0, "nothing was proposed")
    p = reply.proposal
    given = sum(r.quantity for r in rows if not r.returned)
    taken = sum(r.quantity for r in rows if r.returned)
    print(
        f"{'already proposed' if reply.replayed else 'proposed'} {p.party}:{p.proposal_id}: "
        f"ALLOCATION_TABLE of {len(rows):,} rows ({given:,} t to allocate, {taken:,} t to "
        f"return), pending until {p.expire_time.ToDatetime():%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"a second regulator approves it with: registry proposals approve {p.party} {p.proposal_id}"
    )
    write_report(args.report, [])
    return 0


def _summarise_allocations(
    args: argparse.Namespace, results: Sequence[tuple[int, admin_pb.AllocationResult]]
) -> int:
    counts: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {"REFUSED": Counter(), "REJECTED": Counter()}
    problems: list[Problem] = []
    for line, result in results:
        status = common_pb.RowStatus.Name(result.status).removeprefix("ROW_STATUS_")
        counts[status] += 1
        if status in reasons:
            reasons[status][result.reason] += 1
            problems.append(
                Problem(
                    line,
                    "transaction_id",
                    result.reason,
                    f"{status} {result.transaction_id}: {result.message}",
                )
            )
    for status in ("COMPLETED", "ALREADY_COMPLETED", "REFUSED", "REJECTED"):
        detail = _reason_counts(reasons.get(status, {}))
        print(f"{status:<18}{counts[status]:>10,}{detail}")
    if counts["COMPLETED"] == 0 and counts["ALREADY_COMPLETED"] == len(results):
        print("nothing changed: every row was already completed")
    if problems:
        print_problems(
            f"{len(problems):,} row(s) not applied (a refused id stays "
            "refused: fix the cause and use a new transaction_id)",
            problems,
        )
    write_report(args.report, problems)
    return Exit.FINDING if problems else 0


def _reason_counts(reasons: Mapping[str, int]) -> str:
    if not reasons:
        return ""
    return (
        "  (" + ", ".join(f"{reason or '?'} {n:,}" for reason, n in sorted(reasons.items())) + ")"
    )


def _server_refused(
    args: argparse.Namespace,
    error: grpc.RpcError,
    lines: Sequence[int],
    offset: int,
    consequence: str,
) -> int:
    """A refused call: its bad rows by file line, or the error as the server gave it."""
    violations = violations_of(error)
    if not any(ROW_FIELD.match(field) for field, _, _ in violations):
        print(f"registry import: {consequence}", file=sys.stderr)
        return report_error(error)
    problems = server_problems(violations, lines, offset)
    code = cast(grpc.Call, error).code()
    print_problems(
        f"the server refused the call ({code.name}: "
        f"{cast(grpc.Call, error).details()})\n{consequence}:",
        problems,
    )
    write_report(args.report, problems)
    return exit_for_status(code.name)

"""``registry allocate``: turn benchmark tables and companies' output data into the
allocation table a regulator imports (or proposes for a second regulator's approval).

    registry allocate pre 2025 --benchmarks benchmarks-2025.csv \\
        --outputs output-2024.csv --out pre-allocation-2025.csv
    registry allocate true-up 2025 --benchmarks benchmarks-2025.csv \\
        --outputs output-2025.csv --out true-up-2025.csv
    registry allocate verified-emissions 2024 --benchmarks benchmarks-by-year.csv \\
        --emissions verified-2024.csv --out steel-2024.csv

Both files are validated whole first (every bad row named by line, as ``registry
import`` does); then the server is asked what each account was already allocated for
the year (``GetComplianceStatus.allocated``), so the table only ever moves the
difference:

- **pre**: share x benchmark(Y) x output(Y-1) x factors per output row, floored, summed
  per account; an account gets what it lacks of that, never less than it has.
- **true-up**: benchmark(Y) x output(Y) x factors, the same way; an account gets what it
  lacks, or an ``ALLOCATION_RETURN`` row gives back what it got too much.
- **verified-emissions**: for a sector whose year the table allocates at verified
  emissions (``method`` ``VERIFIED_EMISSIONS``: steel, cement and aluminium in 2024), the
  allocation is the verified emissions of the file (``registry import emissions``
  format); settled like the true-up. Accounts of other sectors are refused by line.

An output row is one product line of a unit (electricity, heat); a CHP unit earns its
electricity line plus its heat line, each floored.

Nothing moves here: the output is a CSV file in ``registry import allocations`` format,
to review and then import (``--propose ID`` when four eyes are required). Transaction
ids are derived from the year and the two files' digests, so importing the same table
twice replays it; each row's reason names both files' sha256, which ties every
allocation on the ledger to the exact data it was computed from.

Exit codes: 0 the table was written; 2 nothing written (a bad file, an account the
server does not know, no connection).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from registry.cli.bulk import ParsedFile, Schema, read_csv
from registry.cli.exits import Exit, UsageError
from registry.cli.imports import (
    ALLOCATIONS_SCHEMA,
    EMISSIONS_SCHEMA,
    PROGRESS_EVERY,
    AllocationLine,
    EmissionsLine,
)
from registry.cli.problems import Problem, file_problems, print_problems, write_report
from registry.cli.remote import add_connection_options, client_for, report_error
from registry.client import RegistryClient, error_details
from registry.domain.errors import InvalidCommand
from registry.observability.progress import Progress
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import common_pb2 as common_pb

if TYPE_CHECKING:
    from registry.domain.accounts import Sector
    from registry.domain.allocation import AccountAllocation, BenchmarkTable, OutputRow, OutputUse

T = TypeVar("T")

# Keyed by ``OutputUse`` values (a ``StrEnum``: its members hash and compare as these
# strings), so building the parser does not import the domain (and eventsourcing).
PHASES = {
    "pre": "PRE_ALLOCATION",
    "true-up": "TRUE_UP",
    "verified-emissions": "VERIFIED_EMISSIONS",
}
ID_PREFIX = {
    "PRE_ALLOCATION": "PRE",
    "TRUE_UP": "TRUEUP",
    "VERIFIED_EMISSIONS": "VERIFIED",
}
HELP = {
    "PRE_ALLOCATION": "the table's share (e.g. 70%%) of benchmark x last year's output: "
    "allocate what each account lacks of it",
    "TRUE_UP": "benchmark x the year's verified output: allocate what is missing or "
    "take back the excess",
    "VERIFIED_EMISSIONS": "allocation = verified emissions, for the sectors whose "
    "year the table allocates so (steel, cement, aluminium in 2024)",
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = sub.add_parser(
        "allocate",
        help="compute a year's pre-allocation or true-up "
        "from benchmark and output files into an allocation table",
        description="Compute a year's pre-allocation or true-up from "
        "benchmark and output files into an allocation table to review "
        "and import (`registry import allocations`); nothing moves here.",
    )
    phases = command.add_subparsers(dest="phase", required=True)
    for name, use in PHASES.items():
        phase = phases.add_parser(name, help=HELP[use])
        phase.add_argument("year", type=int, help="the allocation (compliance) year")
        phase.add_argument(
            "--benchmarks",
            type=Path,
            required=True,
            help="benchmark table CSV (docs/allocation-tables.md)",
        )
        if use == "VERIFIED_EMISSIONS":
            phase.add_argument(
                "--emissions",
                type=Path,
                required=True,
                help="verified emissions CSV of Y (registry import emissions format)",
            )
        else:
            phase.add_argument(
                "--outputs",
                type=Path,
                required=True,
                help=f"output data CSV of {'Y-1' if name == 'pre' else 'Y'}",
            )
        phase.add_argument(
            "--out",
            type=Path,
            required=True,
            help="where to write the allocation table (registry import allocations format)",
        )
        phase.add_argument(
            "--source",
            default="",
            help="where allocated units come from "
            "(e.g. CN-ISSUANCE); default the allocation reserve. Returns always "
            "go back to the reserve",
        )
        phase.add_argument(
            "--report",
            type=Path,
            default=None,
            help="write every problem as CSV (line,column,reason,message)",
        )
        phase.set_defaults(run=_allocate, use=use)
        add_connection_options(phase)


def _allocate(args: argparse.Namespace) -> int:
    from registry.cli.benchmark_tables import OUTPUT_SCHEMA
    from registry.domain.allocation import AccountAllocation, OutputUse, account_targets

    use = OutputUse(args.use)
    if use is OutputUse.VERIFIED_EMISSIONS:
        return _allocate_verified(args)
    table = _read_table(args)
    outputs = _read(args.outputs, OUTPUT_SCHEMA, args.report) if table is not None else None
    if table is None or outputs is None:
        return Exit.INVALID
    problems = _against_table(outputs, table, use, args.year)
    if problems:
        return _refuse(args.outputs, problems, args.report)
    targets = account_targets(outputs.rows, table, use)
    lines_of: dict[str, list[int]] = defaultdict(list)
    for row, line in zip(outputs.rows, outputs.lines, strict=True):
        lines_of[row.account_id].append(line)
    try:
        ledger = _ledger(args, list(targets), lines_of)
    except grpc.RpcError as error:
        print("registry allocate: nothing was written", file=sys.stderr)
        return report_error(error)
    if isinstance(ledger, list):
        return _refuse(args.outputs, ledger, args.report)
    plan = [
        AccountAllocation(account, sector, count, target, ledger[account].allocated, use)
        for account, (sector, count, target) in targets.items()
    ]
    return _write(args, plan, table.digest, outputs.digest)


def _allocate_verified(args: argparse.Namespace) -> int:
    """Allocation = verified emissions, for accounts whose sector's year the table
    allocates so; every other account (or a row of another year) is refused by line."""
    table = _read_table(args)
    emissions = _read(args.emissions, EMISSIONS_SCHEMA, args.report) if table is not None else None
    if table is None or emissions is None:
        return Exit.INVALID
    problems = [
        Problem(
            line,
            "compliance_year",
            "INVALID_COMPLIANCE_YEAR",
            f"emissions of {row.compliance_year}: this table is for {args.year}",
        )
        for row, line in zip(emissions.rows, emissions.lines, strict=True)
        if row.compliance_year != args.year
    ]
    if problems:
        return _refuse(args.emissions, problems, args.report)
    lines_of = {
        row.account_id: [line] for row, line in zip(emissions.rows, emissions.lines, strict=True)
    }
    try:
        ledger = _ledger(args, list(lines_of), lines_of, sectors=True)
    except grpc.RpcError as error:
        print("registry allocate: nothing was written", file=sys.stderr)
        return report_error(error)
    if isinstance(ledger, list):
        return _refuse(args.emissions, ledger, args.report)
    plan, problems = _verified_plan(emissions, table, ledger, args.year)
    if problems:
        return _refuse(args.emissions, problems, args.report)
    return _write(args, plan, table.digest, emissions.digest)


def _verified_plan(
    emissions: ParsedFile[EmissionsLine],
    table: BenchmarkTable,
    ledger: Mapping[str, Held],
    year: int,
) -> tuple[list[AccountAllocation], list[Problem]]:
    """Each account's target: its verified emissions, which must be those the registry
    records for the year where it records any (``EMISSIONS_MISMATCH`` otherwise)."""
    from registry.domain.allocation import (
        AccountAllocation,
        OutputUse,
        verified_emissions_allocation,
    )

    plan, problems = [], []
    for row, line in zip(emissions.rows, emissions.lines, strict=True):
        held = ledger[row.account_id]
        allocated, sector = held.allocated, held.sector
        if held.verified is not None and held.verified != row.verified_emissions:
            problems.append(
                Problem(
                    line,
                    "verified_emissions",
                    "EMISSIONS_MISMATCH",
                    f"{row.account_id}: the registry records {held.verified:,} t verified "
                    f"for {year}, the file {row.verified_emissions:,} t",
                )
            )
            continue
        try:
            if sector is None:
                raise InvalidCommand(
                    f"{row.account_id} has no sector", reason="NOT_VERIFIED_EMISSIONS_ALLOCATED"
                )
            target = verified_emissions_allocation(table, year, sector, row.verified_emissions)
        except InvalidCommand as error:
            problems.append(Problem(line, "account_id", error.reason, error.message))
            continue
        plan.append(
            AccountAllocation(
                row.account_id, sector, 1, target, allocated, OutputUse.VERIFIED_EMISSIONS
            )
        )
    return plan, problems


def _write(
    args: argparse.Namespace,
    plan: Sequence[AccountAllocation],
    table_digest: str,
    data_digest: str,
) -> int:
    from registry.domain.allocation import OutputUse

    use = OutputUse(args.use)
    lines = _table_lines(plan, use, args.year, table_digest, data_digest, args.source)
    _write_table(args.out, lines)
    write_report(args.report, [])
    _print_summary(plan, use, args.year)
    print(
        f"wrote {len(lines):,} rows to {args.out}; next: registry import allocations "
        f"{args.out} (add --propose ID for a second regulator's approval)"
    )
    return 0


def _read_table(args: argparse.Namespace) -> BenchmarkTable | None:
    from registry.cli.benchmark_tables import BENCHMARK_SCHEMA
    from registry.domain.allocation import BenchmarkTable

    parsed = _read(args.benchmarks, BENCHMARK_SCHEMA, args.report)
    return None if parsed is None else BenchmarkTable(parsed.rows, digest=parsed.digest)


def _read(path: Path, schema: Schema[T], report: Path | None) -> ParsedFile[T] | None:
    """The file's rows, or None after naming every problem of it by line."""
    try:
        with Progress(f"{path.name}: validated", unit="rows") as meter:
            parsed = read_csv(
                path,
                schema,
                progress_every=PROGRESS_EVERY,
                on_progress=lambda done, total: meter.update(done, total=total),
            )
    except OSError as error:
        raise UsageError(f"registry allocate: cannot read {path}: {error.strerror}") from None
    if not parsed.ok:
        _refuse(path, file_problems(parsed.violations), report)
        return None
    print(f"{path}: {len(parsed.rows):,} rows valid (sha256 {parsed.digest})")
    return parsed


def _refuse(path: Path, problems: Sequence[Problem], report: Path | None) -> int:
    print_problems(
        f"{path}: {len(problems):,} problem(s). Nothing was written.", problems, command="allocate"
    )
    write_report(report, problems)
    return Exit.INVALID


def _against_table(
    outputs: ParsedFile[OutputRow], table: BenchmarkTable, use: OutputUse, year: int
) -> list[Problem]:
    """Every output row must be of the year ``use`` reads and have a benchmark."""
    from registry.domain.allocation import OutputUse

    problems = []
    expected = year - 1 if use is OutputUse.PRE_ALLOCATION else year
    for row, line in zip(outputs.rows, outputs.lines, strict=True):
        if row.year != expected:
            problems.append(
                Problem(
                    line,
                    "year",
                    "INVALID_COMPLIANCE_YEAR",
                    f"output of {row.year}: the {use.name.lower()} of "
                    f"{year} reads the output of {expected}",
                )
            )
            continue
        try:
            row.benchmark_row(table, use)
        except InvalidCommand as error:
            problems.append(
                Problem(
                    line, str(error.metadata.get("field", "subtype")), error.reason, error.message
                )
            )
    return problems


@dataclass(frozen=True)
class Held:
    """What the registry says of an account for the year: allocated so far, and (when
    asked) its sector and the verified emissions recorded (None: none yet)."""

    allocated: int
    sector: Sector | None = None
    verified: int | None = None


def _ledger(
    args: argparse.Namespace,
    accounts: Sequence[str],
    lines: Mapping[str, list[int]],
    *,
    sectors: bool = False,
) -> dict[str, Held] | list[Problem]:
    """What the ledger already allocated each account for the year (and, with
    ``sectors``, the account's sector and recorded verified emissions), or the problems
    of accounts it cannot say that for (unknown, not a compliance account)."""
    allocated: dict[str, Held] = {}
    problems: list[Problem] = []
    with (
        client_for(args, timeout=60) as client,
        Progress("asked the registry about", len(accounts), unit="accounts") as meter,
    ):
        for done, account in enumerate(accounts, 1):
            try:
                status = client.call(
                    client.accounts.GetComplianceStatus,
                    account_pb.GetComplianceStatusRequest(
                        account_id=account, compliance_year=args.year
                    ),
                )
                sector = _sector(client, account) if sectors else None
            except grpc.RpcError as error:
                details = error_details(error)
                if details.code not in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    raise
                problems += [
                    Problem(line, "account_id", details.reason, details.message)
                    for line in lines[account]
                ]
                continue
            verified = (
                None
                if status.state == account_pb.COMPLIANCE_STATE_NOT_VERIFIED
                else status.verified_emissions
            )
            allocated[account] = Held(status.allocated, sector, verified)
            meter.update(done)
    return problems or allocated


def _sector(client: RegistryClient, account: str) -> Sector | None:
    from registry.domain.allocation import parse_sector

    found = client.call(
        client.accounts.GetAccount, account_pb.GetAccountRequest(account_id=account)
    )
    name = common_pb.Sector.Name(found.account.holder.sector).removeprefix("SECTOR_")
    return None if name == "UNSPECIFIED" else parse_sector(name)


def _table_lines(
    plan: Sequence[AccountAllocation],
    use: OutputUse,
    year: int,
    benchmarks_digest: str,
    outputs_digest: str,
    source: str,
) -> list[AllocationLine]:
    """One row per account with something to move; ids and reasons name the files."""
    from registry.domain.allocation import OutputUse

    both = hashlib.sha256(f"{benchmarks_digest}:{outputs_digest}".encode()).hexdigest()[:12]
    what = {
        OutputUse.PRE_ALLOCATION: "pre-allocation",
        OutputUse.TRUE_UP: "true-up",
        OutputUse.VERIFIED_EMISSIONS: "allocation at verified emissions",
    }[use]
    data = "emissions" if use is OutputUse.VERIFIED_EMISSIONS else "output"
    reason = f"{what} {year}: benchmarks sha256 {benchmarks_digest}, {data} sha256 {outputs_digest}"
    lines = []
    for entry in plan:
        change = entry.change
        if not change.net:
            continue
        lines.append(
            AllocationLine(
                transaction_id=f"{ID_PREFIX[use]}-{year}-{both}-{entry.account_id}",
                account_id=entry.account_id,
                unit_type="CEA",
                vintage=year,
                quantity=abs(change.net),
                source=source if change.net > 0 else "",
                reason=reason,
                kind="ALLOCATION" if change.net > 0 else "ALLOCATION_RETURN",
            )
        )
    return lines


def _write_table(path: Path, lines: Sequence[AllocationLine]) -> None:
    columns = [column.name for column in ALLOCATIONS_SCHEMA.columns]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(
            [getattr(line, name) if getattr(line, name) is not None else "" for name in columns]
            for line in lines
        )


def _print_summary(plan: Sequence[AccountAllocation], use: OutputUse, year: int) -> None:
    """Accounts and tonnes by sector: what the output earns, what is there, what moves."""
    totals: dict[Sector, list[int]] = defaultdict(lambda: [0] * 6)
    for entry in plan:
        change = entry.change
        for index, value in enumerate(
            (1, entry.rows, entry.target, entry.allocated, change.additional, change.to_return)
        ):
            totals[entry.sector][index] += value
    print(f"{use.name.lower().replace('_', '-')} {year}")
    print(
        f"{'sector':<11}{'accounts':>9}{'rows':>8}{'earned t':>16}{'allocated t':>16}"
        f"{'to allocate t':>16}{'to return t':>14}"
    )
    widths = (9, 8, 16, 16, 16, 14)
    for sector in sorted(totals):
        print(
            f"{sector:<11}"
            + "".join(
                f"{value:>{width},}" for value, width in zip(totals[sector], widths, strict=True)
            )
        )
    overall = [sum(values) for values in zip(*totals.values(), strict=True)] or [0] * 6
    print(
        f"{'all':<11}"
        + "".join(f"{value:>{width},}" for value, width in zip(overall, widths, strict=True))
    )

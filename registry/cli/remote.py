"""Operator commands that talk to a running registry server: balances, history, trace.

The server is ``--server`` or ``REGISTRY_SERVER`` (default ``127.0.0.1:50051``); the
token is ``--token``, ``REGISTRY_TOKEN``, or the first token of the local credentials
file (``REGISTRY_CREDENTIALS_FILE``, default ``$REGISTRY_DATA_DIR/credentials``), which
the embedded server wrote on first start (the first regulator's). TLS: ``--tls-ca``
(``REGISTRY_TLS_CA``) and, for a server requiring client certificates,
``--tls-cert``/``--tls-key``
(``REGISTRY_CLIENT_CERT``/``REGISTRY_CLIENT_KEY``), all PEM files.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from registry.cli.exits import Exit, exit_for_status
from registry.cli.tables import Column, Table, add_output_option
from registry.client import ErrorDetails, RegistryClient, error_details, unit_class
from registry.settings import DEFAULT_DATA_DIR, ConfigurationError
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import common_pb2 as common_pb


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    balances = sub.add_parser("balances", help="an account's holdings, from a running server")
    balances.add_argument("account_id")
    balances.set_defaults(run=_balances)
    history = sub.add_parser("history", help="an account's movements, from a running server")
    history.add_argument("account_id")
    history.add_argument("--limit", type=int, default=100, help="at most this many rows")
    history.set_defaults(run=_history)
    trace = sub.add_parser("trace", help="where a serial is and every account it passed")
    trace.add_argument("unit_class", help="e.g. CEA/2025 or CCER/2024/CCER-2024-0117")
    trace.add_argument("serial", type=int)
    trace.set_defaults(run=_trace)
    surrender = sub.add_parser(
        "surrender",
        help="surrender an account's units against a compliance year (an operator's command)",
    )
    surrender.add_argument("account_id")
    surrender.add_argument("quantity", type=int)
    surrender.add_argument("--year", type=int, required=True, help="the compliance year")
    surrender.add_argument(
        "--id",
        dest="transaction_id",
        required=True,
        help="your transaction id: the same id again is a safe retry",
    )
    surrender.add_argument("--unit-type", default="CEA", choices=["CEA", "CCER"])
    surrender.add_argument("--vintage", type=int, default=None)
    surrender.add_argument("--project", default=None, help="the CCER project, if one")
    surrender.add_argument(
        "--reason", default="", help="why: recorded with the surrender in the event log"
    )
    surrender.set_defaults(run=_surrender)
    status = sub.add_parser(
        "compliance-status",
        help="an account's compliance figures for a year: emissions, obligation, "
        "surrendered, debt carried, CCER still allowed, what may be borrowed or carried over",
    )
    status.add_argument("account_id")
    status.add_argument("year", type=int)
    status.set_defaults(run=_compliance_status)
    for parser in (balances, history, trace, surrender, status):
        add_connection_options(parser)
    for parser in (balances, history):
        add_output_option(parser)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=os.environ.get("REGISTRY_SERVER", "127.0.0.1:50051"),
        help="the registry server to ask (default: $REGISTRY_SERVER, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("REGISTRY_TOKEN", ""),
        help="your bearer token (default: $REGISTRY_TOKEN, else the first "
        "token of $REGISTRY_CREDENTIALS_FILE or "
        "$REGISTRY_DATA_DIR/credentials)",
    )
    add_tls_options(parser)


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key: a TLS server, and this client's certificate."""
    parser.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=os.environ.get("REGISTRY_TLS_CA", ""),
        help="connect over TLS, trusting the server's certificate if signed "
        "by these CA certificates (default: $REGISTRY_TLS_CA)",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        default=os.environ.get("REGISTRY_CLIENT_CERT", ""),
        help="this client's certificate, for a server that requires one "
        "(default: $REGISTRY_CLIENT_CERT; needs --tls-ca and --tls-key)",
    )
    parser.add_argument(
        "--tls-key",
        metavar="PEM",
        default=os.environ.get("REGISTRY_CLIENT_KEY", ""),
        help="the private key of --tls-cert (default: $REGISTRY_CLIENT_KEY)",
    )


def call_remote(
    args: argparse.Namespace,
    work: Callable[[RegistryClient, argparse.Namespace], None],
    timeout: float = 10,
) -> int:
    """Run ``work`` with a client of ``args``' server: 0, or after printing the
    server's refusal the way every command does, its exit status (``registry.cli.exits``;
    an unreadable input file: a usage error)."""
    try:
        with client_for(args, timeout=timeout) as client:
            work(client, args)
    except grpc.RpcError as error:
        return report_error(error)
    except OSError as error:
        print(f"registry: cannot read {error.filename}: {error.strerror}", file=sys.stderr)
        return Exit.USAGE
    return 0


def client_for(args: argparse.Namespace, timeout: float = 10) -> RegistryClient:
    """A client of ``args``' server with the resolved token; no token at all (and no
    client certificate to authenticate with instead) is a ConfigurationError naming where
    one was looked for, before any call: an empty token only earns the server's refusal."""
    # REGISTRY_TOKEN is read again here, not only as --token's default: the default
    # is taken before settings.load() reads REGISTRY_TOKEN_FILE into the environment.
    token = args.token or os.environ.get("REGISTRY_TOKEN", "") or _local_token()
    tls_ca, tls_cert, tls_key = tls_files(args)
    if not token and tls_cert is None:
        raise ConfigurationError(
            "no token: --token, REGISTRY_TOKEN and REGISTRY_TOKEN_FILE are not set and "
            f"{_credentials_path()} "
            "does not exist or holds none; give one with --token TOKEN or REGISTRY_TOKEN=TOKEN "
            "(`registry access init` or an administrator's `registry access token issue` "
            "makes one; an embedded `registry serve` writes its first to that file)"
        )
    return RegistryClient(
        args.server,
        token,
        timeout=timeout,
        attempts=2,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def tls_files(args: argparse.Namespace) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The PEM files of --tls-ca/--tls-cert/--tls-key, read now so a wrong path is named
    (a ConfigurationError: the command exits 2) instead of failing as a handshake."""
    ca = getattr(args, "tls_ca", "") or ""
    cert = getattr(args, "tls_cert", "") or ""
    key = getattr(args, "tls_key", "") or ""
    if bool(cert) != bool(key):
        raise ConfigurationError(
            "a client certificate needs both --tls-cert (REGISTRY_CLIENT_CERT) and "
            "--tls-key (REGISTRY_CLIENT_KEY)"
        )
    if cert and not ca:
        raise ConfigurationError(
            "--tls-cert needs --tls-ca (REGISTRY_TLS_CA): the CA certificates that sign the "
            "server's certificate, so the client certificate is only sent over TLS"
        )
    return (
        _read_pem(ca, "--tls-ca (REGISTRY_TLS_CA)"),
        _read_pem(cert, "--tls-cert (REGISTRY_CLIENT_CERT)"),
        _read_pem(key, "--tls-key (REGISTRY_CLIENT_KEY)"),
    )


def _read_pem(path: str, option: str) -> bytes | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigurationError(f"{option}: cannot read {path} ({error.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(f"{option}: {path} is not a PEM file")
    return data


def report_error(error: grpc.RpcError) -> int:
    """Print a failed call (code, reason, message, bad fields); its exit status."""
    return report_error_details(error_details(error))


def report_error_details(details: ErrorDetails) -> int:
    print(f"registry: {details.code.name} {details.reason}: {details.message}", file=sys.stderr)
    for field_name, description in details.violations:
        print(f"  {field_name}: {description}", file=sys.stderr)
    return exit_for_status(details.code.name)


def _local_token() -> str:
    """The first token of the credentials file the embedded first start wrote (the
    first regulator's), so a local user needs no --token."""
    path = _credentials_path()
    if path.is_file():
        for line in path.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if fields:
                return fields[0]
    return ""


def _credentials_path() -> Path:
    """``REGISTRY_CREDENTIALS_FILE``, else ``$REGISTRY_DATA_DIR/credentials``, absolute so
    a message says where it was looked for whatever the working directory."""
    data_dir = Path(os.environ.get("REGISTRY_DATA_DIR", DEFAULT_DATA_DIR))
    path = Path(os.environ.get("REGISTRY_CREDENTIALS_FILE", "") or data_dir / "credentials")
    return path.absolute()


def _remote(args: argparse.Namespace, command: str) -> int:
    try:
        with client_for(args) as client:
            if command == "balances":
                _print_balances(client, args.account_id, args.output)
            elif command == "history":
                _print_history(client, args.account_id, args.limit, args.output)
            else:
                _print_trace(client, args.unit_class, args.serial)
    except grpc.RpcError as error:
        return report_error(error)
    except ValueError as error:
        print(f"registry: {error}", file=sys.stderr)
        return Exit.USAGE
    return 0


def _surrender(args: argparse.Namespace) -> int:
    request = account_pb.SurrenderUnitsRequest(
        transaction_id=args.transaction_id,
        account_id=args.account_id,
        unit_type=common_pb.UnitType.Value(f"UNIT_TYPE_{args.unit_type}"),
        vintage=args.vintage,
        project=args.project,
        quantity=args.quantity,
        compliance_year=args.year,
        reason=args.reason,
    )
    try:
        with client_for(args) as client:
            reply = client.call(client.accounts.SurrenderUnits, request)
    except grpc.RpcError as error:
        return report_error(error)
    t = reply.transaction
    print(
        f"{t.party}:{t.transaction_id} surrendered {t.quantity:,} {args.unit_type} from "
        f"{args.account_id} for {args.year}"
        + (" (already recorded)" if reply.replayed else f" at position {t.position}")
    )
    return 0


def _compliance_status(args: argparse.Namespace) -> int:
    try:
        with client_for(args) as client:
            s = client.call(
                client.accounts.GetComplianceStatus,
                account_pb.GetComplianceStatusRequest(
                    account_id=args.account_id, compliance_year=args.year
                ),
            )
    except grpc.RpcError as error:
        return report_error(error)
    state = account_pb.ComplianceState.Name(s.state).removeprefix("COMPLIANCE_STATE_")
    print(f"{s.account_id} {s.compliance_year}: {state}")
    for label, value in (
        ("verified emissions", s.verified_emissions),
        ("allocated", s.allocated),
        ("obligation", s.obligation),
        ("surrendered CEA", s.surrendered_cea),
        ("surrendered CCER", s.surrendered_ccer),
        ("advance use", s.advance_used),
        ("outstanding", s.outstanding),
        ("shortfall", s.shortfall),
        ("debt carried in", s.debt_carried),
        ("debt deducted", s.debt_deducted),
        ("CCER cap", s.ccer_cap),
        ("CCER still allowed", s.ccer_remaining),
        ("gap", s.gap),
        ("borrowing limit", s.advance_use_limit),
        ("borrowing left", s.advance_use_remaining),
    ):
        print(f"  {label:<20}{value:>16,} t")
    print(f"  {'may borrow':<20}{'yes' if s.may_borrow else 'no':>16}")
    if s.HasField("net_sales"):
        print(f"  {'net sales':<20}{s.net_sales:>16,} t")
    carry = f"{s.carry_over_limit:>16,} t" if s.HasField("carry_over_limit") else "no limit"
    print(f"  {'may carry over':<20}{carry:>16}")
    step = account_pb.EnforcementStep.Name(s.enforcement_step).removeprefix("ENFORCEMENT_STEP_")
    if s.enforcement_step > account_pb.ENFORCEMENT_STEP_NONE:
        deadline = (
            f" (correction deadline {s.correction_deadline})" if s.correction_deadline else ""
        )
        print(f"  {'enforcement':<20}{step}{deadline}")
        print(f"  {'still short':<20}{s.shortfall_remaining:>16,} t")
        print(f"  {'debt carried out':<20}{s.debt_carried_forward:>16,} t")
    if s.HasField("fine"):
        f = s.fine
        print(
            f"  {'fine':<20}{f.amount} CNY ({f.multiple} x {f.reference_price} CNY/t "
            f"x {f.quantity:,} t)"
        )
    _print_unit_lines(s.unit_lines)
    return 0


def _print_unit_lines(lines: Sequence[account_pb.UnitLineStatus]) -> None:
    """Each unit line's figures and what it owes before the company's cap."""
    if lines:
        print("  by unit (verified / allocated / due before the company cap):")
    for u in lines:
        unit = f"{u.unit_category} {u.unit_id}".strip()
        print(f"    {unit:<38}{u.verified_emissions:>12,} t{u.allocated:>12,} t{u.due:>12,} t")


def _balances(args: argparse.Namespace) -> int:
    return _remote(args, "balances")


def _history(args: argparse.Namespace) -> int:
    return _remote(args, "history")


def _trace(args: argparse.Namespace) -> int:
    return _remote(args, "trace")


def _key(klass: common_pb.UnitClass) -> str:
    text = f"{common_pb.UnitType.Name(klass.unit_type).removeprefix('UNIT_TYPE_')}/"
    return text + str(klass.vintage) + (f"/{klass.project}" if klass.project else "")


def _print_balances(client: RegistryClient, account_id: str, output: str = "table") -> None:
    holdings = client.balances(account_id)
    # the restriction columns show in the table only when they hold something; JSON and
    # CSV always have them, so a script reads one shape
    restricted = output != "table" or any(h.detained or h.frozen for h in holdings)
    columns = [
        Column("unit class", 32),
        *(Column(name, 16, ">", numeric=True) for name in ("total", "held", "available")),
        *(
            Column(name, 16, ">", numeric=True)
            for name in (("detained", "frozen") if restricted else ())
        ),
    ]
    with Table(columns, output) as table:
        for h in holdings:
            extra = (h.detained, h.frozen) if restricted else ()
            table.row(_key(h.unit_class), h.total, h.held, h.available, *extra)
        if not holdings:
            table.note(f"({account_id} holds no units)")


HISTORY_COLUMNS = [
    Column("position", 9, ">", numeric=True, grouped=False, gap=2),
    Column("kind", 21),
    Column("dir", 7),
    Column("unit class", 28),
    Column("quantity", 14, ">", numeric=True, gap=2),
    Column("counterparty", 24),
    Column("transaction"),
    Column("reference", header="", show=lambda r: f"  ({r})" if r else ""),
]
"""``registry history``: one row per movement of the account, newest first."""


def _print_history(
    client: RegistryClient, account_id: str, limit: int, output: str = "table"
) -> None:
    with Table(HISTORY_COLUMNS, output) as table:
        for count, m in enumerate(client.transactions(account_id), 1):
            kind = common_pb.TransactionKind.Name(m.kind).removeprefix("TRANSACTION_KIND_")
            direction = "DEBIT" if m.direction == 1 else "CREDIT"
            table.row(
                m.position,
                kind,
                direction,
                _key(m.unit_class),
                m.quantity,
                m.counterparty_account,
                f"{m.party}:{m.transaction_id}",
                m.reference,
            )
            if count >= limit:
                break


def _print_trace(client: RegistryClient, klass: str, serial: int) -> None:
    trace = client.trace_serial(unit_class(klass), serial)
    print(f"serial {serial} of {klass} is in {trace.current_account}")
    for m in trace.movements:
        kind = common_pb.TransactionKind.Name(m.kind).removeprefix("TRANSACTION_KIND_")
        print(
            f"  {m.position:>9}  {kind:<18}{m.source_account or '(new)':<24} -> "
            f"{m.destination_account:<24}{m.party}:{m.transaction_id}"
        )

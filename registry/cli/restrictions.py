"""``registry restrictions list`` and ``registry restrictions rebut``: what stops units
from moving (account and block freezes, origin detentions, the market halt), and a
holder's rebuttal of a detention, asked of a running server (docs/origins.md)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from registry.cli.remote import add_connection_options, call_remote
from registry.client import RegistryClient
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common_pb


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "restrictions", help="freezes, origin detentions and the market halt; rebuttals"
    )
    commands = group.add_subparsers(dest="restrictions_command", required=True, metavar="ACTION")
    listed = commands.add_parser(
        "list",
        help="the restrictions in force (an operator: those touching its accounts)",
    )
    listed.add_argument(
        "--all", action="store_true", help="also those released, cleared, lifted or confirmed"
    )
    listed.set_defaults(run=_list)
    rebut = commands.add_parser(
        "rebut",
        help="a holder's rebuttal of an origin detention: a statement and evidence files "
        "(only their SHA-256 digests are sent)",
    )
    rebut.add_argument("origin", help="e.g. PROJECT:CCER-2024-0117 or a project id")
    rebut.add_argument("account_id", help="the holder's account")
    rebut.add_argument(
        "--id", dest="rebuttal_id", required=True, help="your rebuttal id (a retry is safe)"
    )
    rebut.add_argument("--statement", required=True, help="the holder's case, in brief")
    rebut.add_argument(
        "--evidence",
        nargs="+",
        default=[],
        metavar="FILE",
        help="evidence documents: each is hashed here, the file itself is not sent",
    )
    rebut.add_argument(
        "--evidence-sha256",
        nargs="+",
        default=[],
        metavar="HEX",
        help="evidence already hashed (SHA-256, 64 lowercase hex digits)",
    )
    rebut.set_defaults(run=_rebut)
    for parser in (listed, rebut):
        add_connection_options(parser)


def digest(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (evidence may be large scans)."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _list(args: argparse.Namespace) -> int:
    def work(client: RegistryClient, args: argparse.Namespace) -> None:
        token, rows = "", list[common_pb.Restriction]()
        while True:
            reply = client.call(
                client.audit.ListRestrictions,
                audit_pb.ListRestrictionsRequest(
                    include_lifted=args.all, page_size=1000, page_token=token
                ),
            )
            rows.extend(reply.restrictions)
            token = reply.next_page_token
            if not token:
                break
        if not rows:
            print("(no restrictions)")
        for r in rows:
            print(format_restriction(r))

    return call_remote(args, work)


def format_restriction(r: common_pb.Restriction) -> str:
    """One restriction, then one indented line per notified holder of a detention."""
    kind = common_pb.RestrictionKind.Name(r.kind).removeprefix("RESTRICTION_KIND_")
    state = common_pb.RestrictionState.Name(r.state).removeprefix("RESTRICTION_STATE_")
    accounts = ",".join(r.account_ids) or "every account"
    line = f"{kind:<18}{r.restriction_id:<32}{state:<10}{r.quantity:>10,}  {accounts}"
    if r.reference:
        line += f"  [{r.reference}]"
    if r.reason:
        line += f"  {r.reason}"
    for h in r.holders:
        holder_state = common_pb.HolderState.Name(h.state).removeprefix("HOLDER_STATE_")
        deadline = h.deadline_time.ToDatetime().date().isoformat()
        line += f"\n    {h.account_id:<24}{holder_state:<14}{h.quantity:>10,}  rebut by {deadline}"
    return line


def _rebut(args: argparse.Namespace) -> int:
    def work(client: RegistryClient, args: argparse.Namespace) -> None:
        digests = [digest(Path(p)) for p in args.evidence] + list(args.evidence_sha256)
        reply = client.call(
            client.accounts.SubmitRebuttal,
            account_pb.SubmitRebuttalRequest(
                origin=args.origin,
                account_id=args.account_id,
                rebuttal_id=args.rebuttal_id,
                statement=args.statement,
                evidence_sha256=digests,
            ),
        )
        state = common_pb.HolderState.Name(reply.holder.state).removeprefix("HOLDER_STATE_")
        again = " (already submitted)" if reply.replayed else ""
        print(
            f"rebuttal {args.rebuttal_id} of {args.account_id} under "
            f"{reply.detention_reference}: {state}{again}"
        )
        for d in digests:
            print(f"  evidence sha256 {d}")

    return call_remote(args, work)

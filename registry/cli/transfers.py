"""`registry transfer`: transfers outside the exchange, asked of a running server.

An operator moves units between two accounts of its holder (one unified social credit
code on both)::

    registry transfer CMP-0001 TRD-0001 500 --id MOVE-7 --reason "to the trading desk"

A regulator proposes a transfer between holders, which a second regulator approves
(``registry proposals approve PARTY ID``) and which is then recorded under ``--id``::

    registry transfer CMP-0001 CMP-0002 1200 --id CO-2026-17 \\
        --kind COURT_ORDER_TRANSFER --propose P-CO-2026-17 \\
        --reason "enforcement of judgment" --reference "(2026) Jing 01 Zhi 123"

The same ``--id`` (or ``--propose`` id) again is a safe retry.
"""

from __future__ import annotations

import argparse
import sys

from registry.cli.exits import Exit
from registry.cli.remote import add_connection_options, call_remote
from registry.client import RegistryClient, UnitsSpec

HOLDER_TRANSFER = "HOLDER_TRANSFER"
ORDERED = ("COURT_ORDER_TRANSFER", "MERGER_TRANSFER", "SPLIT_TRANSFER", "EXCHANGE_CORRECTION")
"""The kinds a regulator proposes (registry.domain.ledger.ORDERED_TRANSFERS)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    transfer = sub.add_parser(
        "transfer",
        help="move units outside the exchange: between one holder's accounts (an "
        "operator), or propose a court-order, merger, split or exchange-correction "
        "transfer (a regulator)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    transfer.add_argument("source", help="the account the units leave")
    transfer.add_argument("destination", help="the account they go to")
    transfer.add_argument("quantity", type=int)
    transfer.add_argument(
        "--id",
        dest="transaction_id",
        required=True,
        help="the transaction id: the same id again is a safe retry",
    )
    transfer.add_argument("--reason", required=True, help="why (recorded with the transfer)")
    transfer.add_argument(
        "--reference",
        default="",
        help="court case number, merger or split decision, exchange ticket (required with "
        "--kind other than HOLDER_TRANSFER; an operator's own reference otherwise)",
    )
    transfer.add_argument("--unit-type", default="CEA", choices=["CEA", "CCER"])
    transfer.add_argument("--vintage", type=int, default=None)
    transfer.add_argument("--project", default=None, help="the CCER project, if one")
    transfer.add_argument(
        "--kind",
        default=HOLDER_TRANSFER,
        choices=[HOLDER_TRANSFER, *ORDERED],
        help="HOLDER_TRANSFER (default, an operator's) or a kind a regulator proposes",
    )
    transfer.add_argument(
        "--propose",
        metavar="PROPOSAL_ID",
        default="",
        help="propose the transfer (four eyes) under this id: required with --kind other "
        "than HOLDER_TRANSFER",
    )
    add_connection_options(transfer)
    transfer.set_defaults(run=_transfer)


def _transfer(args: argparse.Namespace) -> int:
    ordered = args.kind != HOLDER_TRANSFER
    if ordered != bool(args.propose):
        print(
            "registry: "
            + (
                f"a {args.kind} is a regulator's proposal: give --propose PROPOSAL_ID"
                if ordered
                else "an operator's HOLDER_TRANSFER takes effect at once: --propose needs "
                "--kind COURT_ORDER_TRANSFER, MERGER_TRANSFER, SPLIT_TRANSFER or "
                "EXCHANGE_CORRECTION"
            ),
            file=sys.stderr,
        )
        return Exit.USAGE
    return call_remote(args, _propose if ordered else _move)


def _units(args: argparse.Namespace) -> UnitsSpec:
    return UnitsSpec(args.unit_type, args.quantity, args.vintage, args.project)


def _move(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.transfer_units(
        args.transaction_id,
        args.source,
        args.destination,
        _units(args),
        args.reason,
        args.reference,
    )
    t = reply.transaction
    print(
        f"{t.party}:{t.transaction_id} moved {t.quantity:,} {args.unit_type} from "
        f"{t.source_account} to {t.destination_account}"
        + (" (already recorded)" if reply.replayed else f" at position {t.position}")
    )


def _propose(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.propose_transfer(
        args.kind,
        args.propose,
        args.transaction_id,
        args.source,
        args.destination,
        _units(args),
        args.reason,
        args.reference,
    )
    p = reply.proposal
    print(
        f"{'already proposed' if reply.replayed else 'proposed'} {p.party}:{p.proposal_id}: "
        f"{args.kind} of {args.quantity:,} {args.unit_type} from {args.source} to "
        f"{args.destination} ({args.reference}); a second regulator approves it with: "
        f"registry proposals approve {p.party} {p.proposal_id}"
    )

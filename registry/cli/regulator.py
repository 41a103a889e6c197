"""Regulator commands that talk to a running registry server: the compliance rules of
a year, closing a year, and the compliance report (a readable table, or CSV).

    registry rules show 2025
    registry rules set 2025 POWER --obligation-cap-bps 2000 --reason "2025 plan, art. 7"
    registry rules set-shipped 2022 --reason "2021-2022 allocation plan (MEE, Mar 2023)"
    registry rules set-shipped 2025 --reason "2025 plan" --propose   # four eyes on
    registry close-year 2025 --reason "surrender deadline 2026-12-31 passed"
    registry close-year 2025 --reason "deadline passed" --propose P-CLOSE-2025
    registry close-year 2025 --reason "surrender deadline 2026-12-31 passed" --correction-days 30
    registry enforce fine PWR-0001 2025 --multiple 7.5 --price 97.49 --reason "order 2027-17"
    registry enforce deductions 2025 --reason "correction deadline 2027-01-30 passed"
    registry report compliance 2025 --csv > compliance-2025.csv
    registry proposals list --status PENDING
    registry proposals list --province Shandong
    registry proposals approve mee P-2025-ISS
    registry proposals reject mee P-2025-ISS --reason "wrong quantity"
    registry propose ISSUANCE P-2025-ISS --payload @issue-2025.json --reason "2025 cap"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from registry.cli.exits import UsageError, exit_for_status
from registry.cli.remote import add_connection_options, call_remote
from registry.cli.tables import Column, Table, add_output_option
from registry.client import RegistryClient, error_details
from registry.v1 import account_service_pb2 as account_pb
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import audit_service_pb2 as audit_pb
from registry.v1 import common_pb2 as common_pb

if TYPE_CHECKING:
    from registry.domain.rule_defaults import ShippedRules

PROPOSAL_KINDS = [
    value.name.removeprefix("PROPOSAL_KIND_")
    for value in admin_pb.ProposalKind.DESCRIPTOR.values
    if value.number
]


REASON_HELP = "why: recorded with the decision in the event log (required)"


CCER_CAP_BASES = ["OBLIGATION", "VERIFIED_EMISSIONS"]
ADVANCE_USE_BASES = ["GAP", "VERIFIED_EMISSIONS"]
CARRY_OVERS = ["UNLIMITED", "NONE", "NET_SALES"]
"""The values of ``registry.domain.rules``' ``CcerCapBase``, ``AdvanceUseBase`` and
``CarryOver`` in their order, repeated so building the parser imports no domain module
(which imports eventsourcing); tests/unit/test_cli_imports.py checks they agree."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser("rules", help="a compliance year's rules by sector, or set them")
    actions = rules.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="the rules set for a year")
    show.add_argument("year", type=int)
    show.set_defaults(run=partial(_call, work="show"))
    change = actions.add_parser(
        "set",
        help="set a sector's rules for a year (recorded with "
        "who and why; refused once the year is closed)",
    )
    change.add_argument("year", type=int)
    change.add_argument("sector", help="POWER, STEEL, CEMENT, ALUMINIUM or '*' for all")
    change.add_argument(
        "--ccer-cap-bps",
        type=int,
        default=500,
        help="CCER cap, basis points of --ccer-cap-base (default 500)",
    )
    change.add_argument(
        "--ccer-cap-base",
        choices=CCER_CAP_BASES,
        default="OBLIGATION",
        help="what the CCER cap is a share of (default OBLIGATION: MEE 2020 Art. 29)",
    )
    change.add_argument("--cea-min-vintage", type=int, default=None)
    change.add_argument(
        "--advance-use-bps",
        type=int,
        default=0,
        help="next year's CEA allowed, basis points of --advance-use-base",
    )
    change.add_argument(
        "--advance-use-base",
        choices=ADVANCE_USE_BASES,
        default="GAP",
        help="what the advance-use share is of (default GAP: obligation - allocation)",
    )
    change.add_argument(
        "--advance-use-min-gap-bps",
        type=int,
        default=0,
        help="only companies whose gap / verified emissions reaches this may borrow",
    )
    change.add_argument("--deadline", default="", help="surrender deadline, YYYY-MM-DD")
    change.add_argument(
        "--obligation-cap-bps",
        type=int,
        default=None,
        help="obligation capped at allocation + this share of emissions",
    )
    change.add_argument(
        "--unit-cap",
        action="append",
        default=[],
        metavar="CATEGORY=BPS",
        type=_unit_cap,
        help="a unit line of CATEGORY (or '*': every other) owes at most its allocation + "
        "BPS of its emissions, e.g. GAS=0 (repeatable)",
    )
    change.add_argument(
        "--carry-over",
        choices=CARRY_OVERS,
        default="UNLIMITED",
        help="carried (banked) vintages: UNLIMITED, NONE, or NET_SALES (a x net sales + b)",
    )
    change.add_argument(
        "--carry-over-max-vintage", type=int, default=None, help="newest carried vintage"
    )
    change.add_argument(
        "--carry-over-net-sales-bps", type=int, default=0, help="a, in bps (1.5 x = 15000)"
    )
    change.add_argument("--carry-over-base-tonnes", type=int, default=0, help="b, in tonnes")
    change.add_argument("--carry-over-sales-from", default="", help="YYYY-MM-DD")
    change.add_argument("--carry-over-sales-to", default="", help="YYYY-MM-DD (inclusive)")
    change.add_argument("--reason", required=True, help=REASON_HELP)
    change.set_defaults(run=partial(_call, work="set"))
    adopt = actions.add_parser(
        "set-shipped",
        help="set the rules the registry ships for a year (2019-2025), every sector of "
        "the table, each recorded with who and why",
    )
    adopt.add_argument("year", type=int)
    adopt.add_argument("--reason", required=True, help=REASON_HELP)
    adopt.add_argument(
        "--propose",
        nargs="?",
        const="",
        default=None,
        metavar="ID_PREFIX",
        help="four eyes: propose them instead, one RULE_CHANGE per sector of the table, "
        "ids ID_PREFIX-ALL, ID_PREFIX-POWER, ... (default prefix RULES-YEAR), for a "
        "second regulator to approve",
    )
    adopt.set_defaults(run=partial(_call, work="set-shipped"))
    close = sub.add_parser(
        "close-year",
        help="deadline processing: fix shortfalls, order each one corrected by a "
        "correction deadline, freeze the year's rules",
    )
    close.add_argument("year", type=int)
    close.add_argument("--reason", required=True, help=REASON_HELP)
    close.add_argument(
        "--propose",
        metavar="PROPOSAL_ID",
        default="",
        help="propose the closing (YEAR_CLOSING) for a second regulator to approve "
        "(four eyes) instead of closing now",
    )
    close.add_argument(
        "--correction-days",
        type=int,
        default=None,
        help="days to the correction deadline, 1..365 (default 30)",
    )
    close.set_defaults(run=partial(_call, work="close"))
    report = sub.add_parser("report", help="reports from a running server")
    kinds = report.add_subparsers(dest="report", required=True)
    compliance = kinds.add_parser(
        "compliance",
        help="accounts and tonnes by sector, province and status for a compliance year",
    )
    compliance.add_argument("year", type=int)
    compliance.add_argument("--csv", action="store_true", help="CSV: the same as --output csv")
    add_output_option(compliance)
    compliance.set_defaults(run=partial(_call, work="compliance"))
    proposals = sub.add_parser(
        "proposals",
        help="four eyes: list, approve or reject proposals (approving carries the action out)",
    )
    verbs = proposals.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="proposals, oldest first")
    listing.add_argument(
        "--status",
        default="",
        choices=["", "PENDING", "APPROVED", "REJECTED", "EXPIRED", "EXECUTED", "FAILED"],
    )
    listing.add_argument(
        "--province",
        default="",
        help="only those proposed, approved or rejected by a regulator of this province "
        "(as it then was)",
    )
    listing.set_defaults(run=partial(_call, work="list"))
    add_output_option(listing)
    expire = verbs.add_parser(
        "expire", help="record every pending proposal past its validity as expired"
    )
    expire.set_defaults(run=partial(_call, work="expire"))
    approve = verbs.add_parser("approve", help="approve as a second regulator")
    reject = verbs.add_parser("reject", help="reject (or, as its proposer, withdraw)")
    for verb in (approve, reject):
        verb.add_argument("party", help="the proposing party (scopes the proposal id)")
        verb.add_argument("proposal_id")
    reject.add_argument("--reason", required=True, help=REASON_HELP)
    approve.set_defaults(run=partial(_call, work="approve"))
    reject.set_defaults(run=partial(_call, work="reject"))
    propose = sub.add_parser(
        "propose",
        help="four eyes: propose an action for a second "
        "regulator to approve (payload: see docs/compliance.md)",
    )
    propose.add_argument("kind", choices=PROPOSAL_KINDS)
    propose.add_argument("proposal_id")
    propose.add_argument(
        "--payload", required=True, help="the action's parameters as a JSON object, or @FILE"
    )
    propose.add_argument("--reason", required=True, help=REASON_HELP)
    propose.add_argument(
        "--valid-hours",
        type=int,
        default=0,
        help="how long it waits for approval (1..2160; default 7 days)",
    )
    propose.set_defaults(run=partial(_call, work="propose"))
    for parser in (
        show,
        change,
        adopt,
        close,
        compliance,
        listing,
        expire,
        approve,
        reject,
        propose,
    ):
        add_connection_options(parser)


def _call(args: argparse.Namespace, work: str) -> int:
    return call_remote(
        args,
        {
            "show": _print_rules,
            "set": _set_rules,
            "set-shipped": _set_shipped_rules,
            "close": _print_closing,
            "compliance": _print_report,
            "list": _list_proposals,
            "approve": _decide_proposal,
            "reject": _decide_proposal,
            "expire": _expire_proposals,
            "propose": _propose,
        }[work],
        timeout=300,
    )


def _print_rules(client: RegistryClient, args: argparse.Namespace) -> None:
    view = client.call(
        client.administration.GetComplianceRules,
        admin_pb.GetComplianceRulesRequest(compliance_year=args.year),
    )
    _print_year(view)


def _print_year(view: admin_pb.GetComplianceRulesResponse) -> None:
    """Each sector's rules, one rule a line: its value and where it comes from (the
    shipped table's source where the value is the shipped one)."""
    from registry.domain.rule_defaults import RULE_NAMES, shipped_rules
    from services.convert import rules_from_proto

    state = "closed" if view.closed else "open"
    year = view.compliance_year
    print(f"compliance year {year}: {state}, {view.version} change(s)")
    shipped = shipped_rules(year)
    if view.rules:
        stored = {line.sector: rules_from_proto(line.rules) for line in view.rules}
    else:
        stored = {key: s.rules for key, s in shipped.items()}
        print(
            "(no rules set: the scheme's defaults apply; the registry ships these, "
            f"`registry rules set-shipped {year}` adopts them)"
            if shipped
            else "(no rules set: the scheme's defaults apply)"
        )
    print(
        f"{'sector':<11}{'CCER cap':>16}{'oldest CEA':>12}{'advance':>16}{'deadline':>12}"
        f"{'obligation cap':>16}{'carry-over':>12}"
    )
    for sector, r in stored.items():
        oldest = "any" if r.cea_min_vintage is None else str(r.cea_min_vintage)
        cap = "none" if r.obligation_cap_bps is None else f"alloc+{r.obligation_cap_bps / 100:g}%"
        base = "oblig" if r.ccer_cap_base == "OBLIGATION" else "verified"
        advance = f"{r.advance_use_bps / 100:g}% {'gap' if r.advance_use_base == 'GAP' else 'ver'}"
        print(
            f"{sector:<11}{f'{r.ccer_cap_bps / 100:g}% {base}':>16}{oldest:>12}"
            f"{advance if r.advance_use_bps else 'none':>16}"
            f"{r.surrender_deadline or 'Dec 31 Y+1':>12}{cap:>16}{r.carry_over:>12}"
        )
    for sector, rules in stored.items():
        print(f"[{sector}]")
        values = rules.as_dict()
        for name in RULE_NAMES:
            value = values[name]
            known = shipped.get(sector)
            source = (
                known.source(name)
                if known is not None and known.rules.as_dict()[name] == value
                else "set by a regulator (see the rule change's reason)"
            )
            shown = (
                ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
                if isinstance(value, dict)
                else "unset"
                if value is None or value == ""
                else str(value)
            )
            print(f"  {name:<26}{shown:<20}{source}")


def _unit_cap(text: str) -> tuple[str, int]:
    """``CATEGORY=BPS`` of ``--unit-cap`` (the server validates the category and bps)."""
    category, sep, bps = text.partition("=")
    if not sep or not bps.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not CATEGORY=BPS (e.g. GAS=0)")
    return category.strip(), int(bps)


def _set_rules(client: RegistryClient, args: argparse.Namespace) -> None:
    from registry.domain.rules import ComplianceRules
    from services.convert import rules_to_proto

    rules = ComplianceRules(
        ccer_cap_bps=args.ccer_cap_bps,
        ccer_cap_base=args.ccer_cap_base,
        cea_min_vintage=args.cea_min_vintage,
        advance_use_bps=args.advance_use_bps,
        advance_use_base=args.advance_use_base,
        advance_use_min_gap_bps=args.advance_use_min_gap_bps,
        surrender_deadline=args.deadline,
        obligation_cap_bps=args.obligation_cap_bps,
        unit_obligation_cap_bps=dict(args.unit_cap),
        carry_over=args.carry_over,
        carry_over_max_vintage=args.carry_over_max_vintage,
        carry_over_net_sales_bps=args.carry_over_net_sales_bps,
        carry_over_base_tonnes=args.carry_over_base_tonnes,
        carry_over_sales_from=args.carry_over_sales_from,
        carry_over_sales_to=args.carry_over_sales_to,
    )
    reply = client.call(
        client.administration.SetComplianceRules,
        admin_pb.SetComplianceRulesRequest(
            compliance_year=args.year,
            sector=args.sector,
            rules=rules_to_proto(rules),
            reason=args.reason,
        ),
    )
    print("changed" if reply.position else "unchanged (already these rules)")
    _print_year(reply.year)


def _set_shipped_rules(client: RegistryClient, args: argparse.Namespace) -> None:
    from registry.domain.rule_defaults import SHIPPED_RULES, shipped_rules
    from services.convert import rules_to_proto

    shipped = shipped_rules(args.year)
    if not shipped:
        raise UsageError(
            f"registry: the registry ships no rules for {args.year} (it ships "
            f"{min(SHIPPED_RULES)}-{max(SHIPPED_RULES)})"
        )
    if args.propose is not None:
        _propose_shipped_rules(client, args, shipped)
        return
    reply = None
    for sector, table in shipped.items():
        try:
            reply = client.call(
                client.administration.SetComplianceRules,
                admin_pb.SetComplianceRulesRequest(
                    compliance_year=args.year,
                    sector=sector,
                    rules=rules_to_proto(table.rules),
                    reason=args.reason,
                ),
            )
        except grpc.RpcError as error:
            details = error_details(error)
            if details.reason != "PROPOSAL_REQUIRED":
                raise
            # refused before any change: the first sector is refused as every other would be
            print(
                f"registry: {details.code.name} {details.reason}: this registry requires four "
                "eyes (REGISTRY_FOUR_EYES): rules change only when a second regulator approves "
                f"a RULE_CHANGE proposal; nothing was changed. Propose the shipped "
                f"{args.year} rules (one proposal per sector: {', '.join(shipped)}) with\n"
                f"  registry rules set-shipped {args.year} --reason {shlex.quote(args.reason)} "
                "--propose\nthen another regulator approves each id it prints with "
                "`registry proposals approve PARTY ID`",
                file=sys.stderr,
            )
            raise SystemExit(exit_for_status(details.code.name)) from None
        print(f"{sector}: " + ("changed" if reply.position else "unchanged"))
    assert reply is not None
    _print_year(reply.year)


def _propose_shipped_rules(
    client: RegistryClient, args: argparse.Namespace, shipped: Mapping[str, ShippedRules]
) -> None:
    """One RULE_CHANGE per sector of the table (the payload names one sector), each
    with the shipped rules and the command's reason; run again, the same ids replay."""
    prefix = args.propose or f"RULES-{args.year}"
    approvals = []
    for sector, table in shipped.items():
        proposal_id = f"{prefix}-{'ALL' if sector == '*' else sector}"
        reply = client.call(
            client.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id=proposal_id,
                kind=admin_pb.PROPOSAL_KIND_RULE_CHANGE,
                payload_json=json.dumps(
                    {
                        "year": args.year,
                        "sector": sector,
                        "reason": args.reason,
                        "rules": table.rules.as_dict(),
                    }
                ),
                reason=args.reason,
            ),
        )
        p = reply.proposal
        print(
            f"{'already proposed' if reply.replayed else 'proposed'} {p.party}:{p.proposal_id}: "
            f"RULE_CHANGE {args.year} {sector}"
        )
        approvals.append(f"  registry proposals approve {p.party} {p.proposal_id}")
    print("a second regulator approves them with:", *approvals, sep="\n")


def _print_closing(client: RegistryClient, args: argparse.Namespace) -> None:
    if args.propose:
        proposed = client.call(
            client.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id=args.propose,
                kind=admin_pb.PROPOSAL_KIND_YEAR_CLOSING,
                payload_json=json.dumps(
                    {"year": args.year, "reason": args.reason}
                    | ({"correction_days": args.correction_days} if args.correction_days else {})
                ),
                reason=args.reason,
            ),
        )
        p = proposed.proposal
        print(
            f"{'already proposed' if proposed.replayed else 'proposed'} "
            f"{p.party}:{p.proposal_id}: YEAR_CLOSING of {args.year}; a second regulator "
            f"approves it with: registry proposals approve {p.party} {p.proposal_id}"
        )
        return
    reply = client.call(
        client.administration.CloseComplianceYear,
        admin_pb.CloseComplianceYearRequest(
            compliance_year=args.year,
            reason=args.reason,
            correction_days=getattr(args, "correction_days", None),
        ),
    )
    what = "was already closed" if reply.replayed else "closed"
    print(
        f"compliance year {reply.compliance_year} {what}: {reply.obligations_closed:,} "
        f"obligations, {reply.shortfalls:,} short by {reply.shortfall_tonnes:,} t in all"
        + (
            f" (ordered to correct by {reply.correction_deadline}; then "
            "`registry enforce deductions` carries what is still short into next year)"
            if reply.correction_deadline
            else ""
        )
    )


REPORT_COLUMNS = (
    "sector",
    "province",
    "state",
    "accounts",
    "verified_emissions",
    "obligation",
    "surrendered_cea",
    "surrendered_ccer",
    "shortfall",
)


def _print_report(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.audit.GetComplianceReport,
        audit_pb.GetComplianceReportRequest(compliance_year=args.year),
    )
    rows = [
        (
            common_pb.Sector.Name(line.sector).removeprefix("SECTOR_"),
            line.province,
            account_pb.ComplianceState.Name(line.state).removeprefix("COMPLIANCE_STATE_"),
            line.accounts,
            line.verified_emissions,
            line.obligation,
            line.surrendered_cea,
            line.surrendered_ccer,
            line.shortfall,
        )
        for line in reply.lines
    ]
    output = "csv" if args.csv else args.output
    if output == "table":
        print(f"compliance year {reply.compliance_year} ({'closed' if reply.closed else 'open'})")
    totals = [0] * 6
    with Table(REPORT_TABLE, output) as table:
        for row in rows:
            table.row(*row)
            totals = [t + v for t, v in zip(totals, row[3:], strict=True)]
        table.note(
            f"{'all':<38}"
            + "".join(
                f"{value:>{c.width},}" for value, c in zip(totals, REPORT_TABLE[3:], strict=True)
            )
        )


REPORT_HEADERS = "sector,province,state,accounts,verified t,obligation t,CEA t,CCER t,shortfall t"

REPORT_TABLE = [
    Column(name, width, align, numeric=numeric, header=header)
    for name, header, width, align, numeric in zip(
        REPORT_COLUMNS,
        REPORT_HEADERS.split(","),
        (10, 14, 14, 9, 16, 16, 16, 12, 14),
        "<<<>>>>>>",
        (False, False, False, True, True, True, True, True, True),
        strict=True,
    )
]
"""``registry report compliance``: the table's headers, the CSV's and JSON's names."""


def _list_proposals(client: RegistryClient, args: argparse.Namespace) -> None:
    status = (
        admin_pb.ProposalStatus.Value(f"PROPOSAL_STATUS_{args.status}")
        if args.status
        else admin_pb.PROPOSAL_STATUS_UNSPECIFIED
    )
    token, shown = "", 0
    with Table(PROPOSAL_COLUMNS, args.output) as table:
        while True:
            page = client.call(
                client.administration.ListProposals,
                admin_pb.ListProposalsRequest(
                    status=status, page_size=500, page_token=token, province=args.province
                ),
            )
            for p in page.proposals:
                proposer = _acting_in(p.proposer, p.proposer_provinces)
                approver = (
                    _acting_in(p.approver, p.approver_provinces)
                    if p.approver
                    else _acting_in(p.rejected_by, p.rejecter_provinces)
                    if p.rejected_by
                    else "-"
                )
                table.row(
                    f"{p.party}:{p.proposal_id}",
                    admin_pb.ProposalKind.Name(p.kind).removeprefix("PROPOSAL_KIND_"),
                    admin_pb.ProposalStatus.Name(p.status).removeprefix("PROPOSAL_STATUS_"),
                    proposer,
                    approver,
                    p.result or p.failure_reason or p.rejection_reason or "",
                )
                shown += 1
            token = page.next_page_token
            if not token:
                break
        if not shown:
            table.note("(no proposals)")


PROPOSAL_COLUMNS = [
    Column("proposal", 28),
    Column("kind", 24),
    Column("status", 10),
    Column("proposer", 24),
    Column("decided by", 24),
    Column("result"),
]
"""``registry proposals list``: one row per proposal, oldest first."""


def _acting_in(principal: str, provinces: Sequence[str]) -> str:
    """A principal and, for a provincial regulator, the provinces it acted in."""
    return f"{principal} ({', '.join(provinces)})" if provinces else principal


def _decide_proposal(client: RegistryClient, args: argparse.Namespace) -> None:
    reply: admin_pb.ApproveProposalResponse | admin_pb.RejectProposalResponse
    if args.verb == "approve":
        reply = client.call(
            client.administration.ApproveProposal,
            admin_pb.ApproveProposalRequest(party=args.party, proposal_id=args.proposal_id),
        )
    else:
        reply = client.call(
            client.administration.RejectProposal,
            admin_pb.RejectProposalRequest(
                party=args.party, proposal_id=args.proposal_id, reason=args.reason
            ),
        )
    p = reply.proposal
    status = admin_pb.ProposalStatus.Name(p.status).removeprefix("PROPOSAL_STATUS_")
    outcome = p.result or p.failure_reason or p.rejection_reason
    print(
        f"{p.party}:{p.proposal_id} {status}"
        + (f": {outcome}" if outcome else "")
        + (" (already decided)" if reply.replayed else "")
    )


def _expire_proposals(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(client.administration.ExpireProposals, admin_pb.ExpireProposalsRequest())
    for p in reply.proposals:
        print(f"{p.party}:{p.proposal_id} EXPIRED")
    print(f"{len(reply.proposals)} proposal(s) expired")


def _propose(client: RegistryClient, args: argparse.Namespace) -> None:
    payload = args.payload
    if payload.startswith("@"):
        payload = Path(payload[1:]).read_text(encoding="utf-8")
    reply = client.call(
        client.administration.ProposeAction,
        admin_pb.ProposeActionRequest(
            proposal_id=args.proposal_id,
            kind=admin_pb.ProposalKind.Value(f"PROPOSAL_KIND_{args.kind}"),
            payload_json=payload,
            reason=args.reason,
            validity_seconds=args.valid_hours * 3600,
        ),
    )
    p = reply.proposal
    print(
        f"{'already proposed' if reply.replayed else 'proposed'} {p.party}:{p.proposal_id} "
        f"{args.kind}, pending until {p.expire_time.ToDatetime():%Y-%m-%d %H:%M} UTC"
    )


def add_enforcement_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`registry enforce`: the steps after a year closes short (Decree 775, Art. 24)."""
    enforce = sub.add_parser(
        "enforce",
        help="after closing: record a fine, or deduct what was not corrected by the deadline",
    )
    steps = enforce.add_subparsers(dest="step", required=True)
    fine = steps.add_parser(
        "fine", help="record the fine on a shortfall: multiple x price x tonnes short"
    )
    fine.add_argument("account_id")
    fine.add_argument("year", type=int)
    fine.add_argument("--multiple", required=True, help="5..10 (Decree 775, Art. 24)")
    fine.add_argument(
        "--price",
        required=True,
        help="CNY per tonne: average market price of the month before the surrender deadline",
    )
    fine.add_argument("--reason", required=True, help=REASON_HELP)
    fine.set_defaults(run=partial(_enforce, work=_record_fine))
    deductions = steps.add_parser(
        "deductions",
        help="carry every shortfall not corrected by its deadline into next year's allocation",
    )
    deductions.add_argument("year", type=int)
    deductions.add_argument("--reason", required=True, help=REASON_HELP)
    deductions.set_defaults(run=partial(_enforce, work=_enforce_deductions))
    for parser in (fine, deductions):
        add_connection_options(parser)


def _enforce(
    args: argparse.Namespace, work: Callable[[RegistryClient, argparse.Namespace], None]
) -> int:
    return call_remote(args, work, timeout=300)


def _record_fine(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.administration.RecordComplianceFine,
        admin_pb.RecordComplianceFineRequest(
            account_id=args.account_id,
            compliance_year=args.year,
            multiple=args.multiple,
            reference_price=args.price,
            reason=args.reason,
        ),
    )
    f = reply.fine
    print(
        f"{reply.account_id} {reply.compliance_year}: fined {f.amount} CNY "
        f"({f.multiple} x {f.reference_price} CNY/t x {f.quantity:,} t)"
        + (" (already recorded)" if reply.replayed else "")
    )


def _enforce_deductions(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.administration.EnforceDeductions,
        admin_pb.EnforceDeductionsRequest(compliance_year=args.year, reason=args.reason),
    )
    print(
        f"compliance year {reply.compliance_year}: {reply.deducted:,} shortfalls "
        f"({reply.deducted_tonnes:,} t) carried into {reply.compliance_year + 1}'s allocation; "
        f"{reply.awaiting_deadline:,} still inside their correction deadline"
    )

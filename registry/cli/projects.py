"""`registry projects`: CCER projects on a running registry server.

    registry projects register P-0117 --owner PRJ-0117 --province Yunnan \\
        --methodology CCER-14-001-V01 --sector FORESTRY --verifier "CQC" \\
        --developer "Yunnan Forestry Co." --crediting-start 2020-01-01 \\
        --crediting-end 2029-12-31 --reference "MEE-REG-2024-0117" --reason "validated"
    registry projects register P-0117 ... --propose P-REG-0117      (four eyes)
    registry projects show P-0117
    registry projects list --province Yunnan --status REGISTERED
    registry projects update P-0117 ... --reference R --reason WHY
    registry projects suspend P-0117 --reference "MEE-2025-12" --reason "verification lapsed"
    registry projects reinstate P-0117 --reference "MEE-2025-19" --reason "re-verified"
    registry projects deregister P-0117 --reference "MEE-2026-01" --reason "withdrawn"

Every change takes ``--propose PROPOSAL_ID`` to propose it for a second regulator
instead (the server refuses the direct call when four eyes are required).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from functools import partial

from registry.cli.remote import add_connection_options, call_remote
from registry.cli.tables import Column, Table, add_output_option
from registry.client import RegistryClient
from registry.v1 import administration_service_pb2 as admin_pb
from registry.v1 import common_pb2 as common_pb

STATUSES = ["", "REGISTERED", "SUSPENDED", "DEREGISTERED"]
DETAILS = ("owner", "province", "methodology", "sector", "verifier", "developer")
STATUS_CHANGES = {
    "suspend": ("SuspendProject", "PROJECT_SUSPENSION"),
    "reinstate": ("ReinstateProject", "PROJECT_REINSTATEMENT"),
    "deregister": ("DeregisterProject", "PROJECT_DEREGISTRATION"),
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    projects = sub.add_parser(
        "projects", help="CCER projects: register, show, list, update, suspend, deregister"
    )
    verbs = projects.add_subparsers(dest="verb", required=True)
    parsers = []
    for verb, help_text in (
        ("register", "register a project (its issuance lands in its owner's PROJECT account)"),
        ("update", "replace a project's details"),
    ):
        parser = verbs.add_parser(verb, help=help_text)
        parser.add_argument("project_id")
        parser.add_argument("--owner", required=True, help="the owner's PROJECT account")
        for name in DETAILS[1:]:
            parser.add_argument(f"--{name}", required=True)
        parser.add_argument("--crediting-start", required=True, type=_date, help="YYYY-MM-DD")
        parser.add_argument("--crediting-end", required=True, type=_date, help="YYYY-MM-DD")
        _change_options(parser)
        parser.set_defaults(run=partial(_call, work=verb))
        parsers.append(parser)
    for verb in STATUS_CHANGES:
        parser = verbs.add_parser(verb, help=f"{verb} a project")
        parser.add_argument("project_id")
        _change_options(parser)
        parser.set_defaults(run=partial(_call, work=verb))
        parsers.append(parser)
    show = verbs.add_parser("show", help="one project")
    show.add_argument("project_id")
    show.set_defaults(run=partial(_call, work="show"))
    listing = verbs.add_parser("list", help="projects by id, filtered")
    listing.add_argument("--province", default="")
    listing.add_argument("--methodology", default="")
    listing.add_argument("--status", default="", choices=STATUSES)
    listing.set_defaults(run=partial(_call, work="list"))
    add_output_option(listing)
    for parser in (*parsers, show, listing):
        add_connection_options(parser)


def _change_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference", required=True, help="the decision's reference (registration number)"
    )
    parser.add_argument("--reason", required=True, help="why: recorded in the event log")
    parser.add_argument(
        "--propose",
        metavar="PROPOSAL_ID",
        default="",
        help="propose it for a second regulator to approve (four eyes) instead",
    )


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _call(args: argparse.Namespace, work: str) -> int:
    runs = {"show": _show, "list": _list, "register": _change, "update": _change}
    return call_remote(args, runs.get(work, _change))


def _details(args: argparse.Namespace) -> admin_pb.ProjectDetails:
    start, end = args.crediting_start, args.crediting_end
    return admin_pb.ProjectDetails(
        owner_account=args.owner,
        province=args.province,
        methodology=args.methodology,
        sector=args.sector,
        verifier=args.verifier,
        developer=args.developer,
        crediting_start=common_pb.Date(year=start.year, month=start.month, day=start.day),
        crediting_end=common_pb.Date(year=end.year, month=end.month, day=end.day),
    )


def _payload(args: argparse.Namespace) -> dict[str, object]:
    payload: dict[str, object] = {
        "project_id": args.project_id,
        "reason": args.reason,
        "reference": args.reference,
    }
    if args.verb in ("register", "update"):
        payload |= {name: getattr(args, name) for name in DETAILS[1:]}
        payload |= {
            "owner_account": args.owner,
            "crediting_start": args.crediting_start.isoformat(),
            "crediting_end": args.crediting_end.isoformat(),
        }
    return payload


def _change(client: RegistryClient, args: argparse.Namespace) -> None:
    verb = args.verb
    kind = {"register": "PROJECT_REGISTRATION", "update": "PROJECT_CHANGE"}.get(verb) or (
        STATUS_CHANGES[verb][1]
    )
    if args.propose:
        proposed = client.call(
            client.administration.ProposeAction,
            admin_pb.ProposeActionRequest(
                proposal_id=args.propose,
                kind=admin_pb.ProposalKind.Value(f"PROPOSAL_KIND_{kind}"),
                payload_json=json.dumps(_payload(args)),
                reason=args.reason,
            ),
        )
        p = proposed.proposal
        print(
            f"{'already proposed' if proposed.replayed else 'proposed'} "
            f"{p.party}:{p.proposal_id}: {kind} of {args.project_id}; a second regulator "
            f"approves it with: registry proposals approve {p.party} {p.proposal_id}"
        )
        return
    adm = client.administration
    common = {"project_id": args.project_id, "reason": args.reason, "reference": args.reference}
    reply: (
        admin_pb.RegisterProjectResponse
        | admin_pb.UpdateProjectResponse
        | admin_pb.SuspendProjectResponse
        | admin_pb.ReinstateProjectResponse
        | admin_pb.DeregisterProjectResponse
    )
    if verb == "register":
        reply = client.call(
            adm.RegisterProject, admin_pb.RegisterProjectRequest(**common, details=_details(args))
        )
    elif verb == "update":
        reply = client.call(
            adm.UpdateProject, admin_pb.UpdateProjectRequest(**common, details=_details(args))
        )
    else:
        method = STATUS_CHANGES[verb][0]
        request = getattr(admin_pb, f"{method}Request")(**common)
        reply = client.call(getattr(adm, method), request)
    print("unchanged (already so)" if reply.replayed else f"{verb}: done")
    _print_project(reply.project)


def _show(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.administration.GetProject, admin_pb.GetProjectRequest(project_id=args.project_id)
    )
    _print_project(reply.project)


def _list(client: RegistryClient, args: argparse.Namespace) -> None:
    status = admin_pb.ProjectStatus.Value(f"PROJECT_STATUS_{args.status or 'UNSPECIFIED'}")
    count = 0
    with Table(PROJECT_COLUMNS, args.output) as table:
        found = client.projects(province=args.province, methodology=args.methodology, status=status)
        for p in found:
            state = admin_pb.ProjectStatus.Name(p.status).removeprefix("PROJECT_STATUS_")
            d = p.details
            table.row(p.project_id, state, d.owner_account, d.province, d.methodology)
            count += 1
        table.note(f"{count} project(s)")


PROJECT_COLUMNS = [
    Column("project", 20),
    Column("status", 14),
    Column("owner", 18),
    Column("province", 14),
    Column("methodology"),
]
"""``registry projects list``: one row per project."""


def _print_project(p: admin_pb.Project) -> None:
    d = p.details
    state = admin_pb.ProjectStatus.Name(p.status).removeprefix("PROJECT_STATUS_")
    start, end = d.crediting_start, d.crediting_end
    print(f"project {p.project_id}: {state} ({p.status_reference}: {p.status_reason})")
    print(f"  owner account    {d.owner_account}")
    print(f"  province         {d.province}")
    print(f"  methodology      {d.methodology}")
    print(f"  sector           {d.sector}")
    print(f"  verifier         {d.verifier}")
    print(f"  developer        {d.developer}")
    print(
        f"  crediting period {start.year:04}-{start.month:02}-{start.day:02} .. "
        f"{end.year:04}-{end.month:02}-{end.day:02}"
    )
    print(f"  registered       {p.reference} by {p.registered_by}")

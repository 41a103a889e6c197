"""``registry access``: principals, role grants and credentials.

    registry access init --party mee --name admin --admin mee/admin-2 \
        --regulator mee/regulator-li --regulator mee/regulator-wang   # local: the founding
    registry access grant GRANT_ID PARTY NAME ROLE [--accounts A,B | --accounts '*'] --reason R
    registry access grant GRANT_ID PARTY NAME regulator --province Shandong --reason R
    registry access revoke-grant GRANT_ID --reason R
    registry access token issue PARTY NAME --reason R      # prints the token once
    registry access token rotate CREDENTIAL_ID --reason R
    registry access revoke CREDENTIAL_ID --reason R         # a token or a certificate
    registry access cert add PARTY NAME client.pem --reason R
    registry access list

All but ``init`` talk to a running server with an administrator's token (``--token``
or ``REGISTRY_TOKEN``). ``init`` writes to the configured store directly, once: it
refuses when anyone holds a grant already. It is the registry's founding: its
administrators (two, so that later grants can have four eyes) and its first
regulators and auditors, in one recorded step.

A regulator, exchange, operator or admin grant takes two administrators: the first
``grant`` records a proposal; a different administrator running the same ``grant``
(same id, principal, role and accounts) approves it. ``revoke-grant`` on a pending
grant rejects it.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from registry.cli.exits import Exit, exit_for_error
from registry.cli.remote import add_connection_options, call_remote
from registry.client import RegistryClient
from registry.domain.errors import InvalidCommand, RegistryError
from registry.settings import Settings
from registry.v1 import access_service_pb2 as pb

if TYPE_CHECKING:
    from registry.domain.transactions import Principal

ROLES = ["exchange", "operator", "regulator", "auditor", "admin"]
"""``registry.domain.access.Role``'s values in its order, repeated so building the parser
imports no domain aggregates (tests/unit/test_cli_imports.py checks they agree)."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    access = sub.add_parser("access", help="principals, role grants, tokens, certificates")
    verbs = access.add_subparsers(dest="verb", required=True)
    init = verbs.add_parser(
        "init",
        help="found the registry's access: its administrators "
        "and first regulators, each with a token, directly in the "
        "configured store (only when nobody has a grant)",
    )
    init.add_argument("--party", required=True, help="the first administrator's party")
    init.add_argument("--name", required=True, help="the first administrator's name")
    for role in ("admin", "regulator", "auditor"):  # Role's values: no domain import here
        init.add_argument(
            f"--{role}",
            action="append",
            default=[],
            metavar="PARTY/NAME",
            help=f"another {role} (repeat)",
        )
    init.add_argument(
        "--reason", default="registry access init", help="recorded with every grant and token"
    )
    init.set_defaults(run=_init)
    grant = verbs.add_parser(
        "grant", help="grant a role (over accounts, for exchange and operator)"
    )
    grant.add_argument(
        "grant_id",
        help="your id for this grant: a second administrator "
        "approves a pending grant by running the same grant with the same id",
    )
    grant.add_argument("party", help="the principal's party (an organisation id)")
    grant.add_argument("name", help="the principal's name within its party")
    grant.add_argument(
        "role", choices=ROLES, metavar="ROLE", help=f"the role granted: {', '.join(ROLES)}"
    )
    grant.add_argument(
        "--accounts",
        default="",
        help="comma-separated account ids ('*': every account, exchange only)",
    )
    grant.add_argument(
        "--province",
        action="append",
        default=[],
        metavar="PROVINCE",
        help="regulator only, repeatable: a provincial department's province (verified "
        "emissions and reads of its companies only; none: national)",
    )
    revoke_grant = verbs.add_parser("revoke-grant", help="withdraw a grant")
    revoke_grant.add_argument("grant_id", help="the id the grant was made with")
    token = verbs.add_parser("token", help="issue or rotate a bearer token")
    token_verbs = token.add_subparsers(dest="token_verb", required=True)
    issue = token_verbs.add_parser("issue", help="a new token for a principal (shown once)")
    issue.add_argument("party", help="the principal's party")
    issue.add_argument("name", help="the principal's name within its party")
    rotate = token_verbs.add_parser("rotate", help="a new token, the old one revoked")
    rotate.add_argument("credential_id", help="the token's credential id (`access list`)")
    revoke = verbs.add_parser("revoke", help="revoke a token or certificate at once")
    revoke.add_argument(
        "credential_id", help="the token's or certificate's credential id (`access list`)"
    )
    cert = verbs.add_parser("cert", help="register a client certificate (mutual TLS)")
    cert_verbs = cert.add_subparsers(dest="cert_verb", required=True)
    add = cert_verbs.add_parser("add", help="map a certificate to a principal")
    add.add_argument("party", help="the principal's party")
    add.add_argument("name", help="the principal's name within its party")
    add.add_argument("certificate", type=Path, help="the client certificate, PEM")
    listing = verbs.add_parser("list", help="every principal with its grants and credentials")
    for parser, work in (
        (grant, "grant"),
        (revoke_grant, "revoke-grant"),
        (issue, "issue"),
        (rotate, "rotate"),
        (revoke, "revoke"),
        (add, "cert"),
        (listing, "list"),
    ):
        if parser is not listing:
            parser.add_argument(
                "--reason",
                required=True,
                help="why: recorded with the change in the event log (required)",
            )
        parser.set_defaults(run=partial(_call, work=work))
        add_connection_options(parser)


def _init(args: argparse.Namespace) -> int:
    from registry.bootstrap import build_registry
    from registry.domain.access import Role, check_principal

    try:
        founders = [(check_principal(args.party, args.name), Role.ADMIN)]
        for role in (Role.ADMIN, Role.REGULATOR, Role.AUDITOR):
            founders += [(_principal(text), role) for text in getattr(args, role)]
    except InvalidCommand as error:
        print(f"registry access init: {error.reason}: {error.message}", file=sys.stderr)
        return exit_for_error(error)
    registry = build_registry(Settings.from_env())
    try:
        made = registry.access.genesis(founders, args.reason)
    except RegistryError as error:
        print(f"registry access init: {error.reason}: {error.message}", file=sys.stderr)
        return exit_for_error(error)
    finally:
        registry.close()
    if made is None:
        print(
            "registry access init: principals exist already; an administrator grants "
            "with 'registry access grant'",
            file=sys.stderr,
        )
        return Exit.REFUSED  # done once, for good: the state refuses a second founding
    if sum(role is Role.ADMIN for _, role in founders) < 2:
        print(
            "registry access init: one administrator: regulator, exchange, operator and "
            "admin grants need a second administrator to approve them; found the "
            "registry with two (--admin PARTY/NAME)",
            file=sys.stderr,
        )
    for first in reversed(made):  # the first administrator's token on the last line
        print(f"{first.principal} ({first.role}): token (shown once):\n{first.token.token}")
    return 0


def _principal(text: str) -> Principal:
    from registry.domain.access import check_principal

    party, slash, name = text.partition("/")
    if not slash:
        raise InvalidCommand(f"{text!r}: give PARTY/NAME", reason="INVALID_PRINCIPAL_NAME")
    return check_principal(party, name)


def _call(args: argparse.Namespace, work: str) -> int:
    return call_remote(args, _WORK[work])


def _grant(client: RegistryClient, args: argparse.Namespace) -> None:
    accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
    reply = client.call(
        client.access.GrantRole,
        pb.GrantRoleRequest(
            grant_id=args.grant_id,
            party=args.party,
            name=args.name,
            role=pb.Role.Value(f"ROLE_{args.role.upper()}"),
            account_ids=accounts,
            reason=args.reason,
            provinces=args.province,
        ),
    )
    what = (
        f"grant {reply.grant_id}: {args.party}/{args.name} {args.role}"
        + (f" over {', '.join(accounts)}" if accounts else "")
        + (f" in {', '.join(args.province)}" if args.province else "")
    )
    if reply.pending:
        print(
            f"{what}: proposed by {reply.proposed_by}, pending: a different administrator "
            "approves it by running this same grant"
        )
    else:
        print(
            what
            + (
                f" (proposed by {reply.proposed_by}, approved by {reply.approved_by})"
                if reply.approved_by
                else ""
            )
            + (" (already granted)" if reply.replayed else "")
        )


def _revoke_grant(client: RegistryClient, args: argparse.Namespace) -> None:
    client.call(
        client.access.RevokeGrant, pb.RevokeGrantRequest(grant_id=args.grant_id, reason=args.reason)
    )
    print(f"grant {args.grant_id} revoked (or, if it was pending, rejected)")


def _issue(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.access.IssueToken,
        pb.IssueTokenRequest(party=args.party, name=args.name, reason=args.reason),
    )
    print(
        f"credential {reply.credential_id} for {args.party}/{args.name}; the token "
        f"(shown once):\n{reply.token}"
    )


def _rotate(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.access.RotateToken,
        pb.RotateTokenRequest(credential_id=args.credential_id, reason=args.reason),
    )
    print(
        f"credential {reply.revoked_credential_id} revoked; new credential "
        f"{reply.credential_id}, the token (shown once):\n{reply.token}"
    )


def _revoke(client: RegistryClient, args: argparse.Namespace) -> None:
    client.call(
        client.access.RevokeCredential,
        pb.RevokeCredentialRequest(credential_id=args.credential_id, reason=args.reason),
    )
    print(f"credential {args.credential_id} revoked: its next call is refused")


def _cert(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(
        client.access.RegisterCertificate,
        pb.RegisterCertificateRequest(
            party=args.party,
            name=args.name,
            certificate_pem=args.certificate.read_text(encoding="ascii"),
            reason=args.reason,
        ),
    )
    print(
        f"credential {reply.credential_id}: certificate {reply.fingerprint[:16]}... "
        f"({reply.subject}) is {args.party}/{args.name}"
    )


def _list(client: RegistryClient, args: argparse.Namespace) -> None:
    reply = client.call(client.access.ListPrincipals, pb.ListPrincipalsRequest())
    for p in reply.principals:
        print(f"{p.party}/{p.name}")
        for g in p.grants:
            role = pb.Role.Name(g.role).removeprefix("ROLE_").lower()
            scope = f" over {', '.join(g.account_ids)}" if list(g.account_ids) != ["*"] else ""
            scope += f" in {', '.join(g.provinces)}" if g.provinces else ""
            by = f"by {g.granted_by}" + (f", approved by {g.approved_by}" if g.approved_by else "")
            state = "PENDING approval, " if g.pending else ""
            print(f"  grant {g.grant_id}: {role}{scope} ({state}{by})")
        for c in p.credentials:
            state = "revoked" if c.revoked else "active"
            what = f" {c.subject}" if c.kind == "certificate" else ""
            print(f"  {c.kind} {c.credential_id}{what}: {state} (by {c.issued_by})")
    if not reply.principals:
        print("(no principals)")


_WORK = {
    "grant": _grant,
    "revoke-grant": _revoke_grant,
    "issue": _issue,
    "rotate": _rotate,
    "revoke": _revoke,
    "cert": _cert,
    "list": _list,
}
